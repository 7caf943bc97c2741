# Script mode (cmake -P), run after a doctest executable is built: lists its test cases and writes one ctest
# add_test per case to OUTPUT. Inputs: EXECUTABLE, PREFIX, LABELS (one label), WORKING_DIRECTORY, OUTPUT.
execute_process(COMMAND ${EXECUTABLE} --list-test-cases OUTPUT_VARIABLE listing RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${EXECUTABLE} --list-test-cases failed (${rc}):\n${listing}")
endif()

# Lines are cut by hand, not as a CMake list: names may hold ';' (a list separator) and unbalanced '[' (which
# stops list splitting). In a doctest filter ',' separates alternatives (escaped as '\,') and '?' matches any one
# character, which stands in for ';'; ctest names show ';' as ','.
set(script "")
string(APPEND listing "\n")
string(FIND "${listing}" "\n" eol)
while(NOT eol EQUAL -1)
  string(SUBSTRING "${listing}" 0 ${eol} line)
  math(EXPR next "${eol} + 1")
  string(SUBSTRING "${listing}" ${next} -1 listing)
  string(FIND "${listing}" "\n" eol)
  if(line STREQUAL "" OR line MATCHES "^(\\[doctest\\] |=+$)")
    continue()
  endif()
  string(REPLACE "," "\\," filter "${line}")
  string(REPLACE ";" "?" filter "${filter}")
  string(REPLACE ";" "," name "${line}")
  string(APPEND script
    "add_test([==[${PREFIX}${name}]==] [==[${EXECUTABLE}]==] [==[--test-case=${filter}]==])\n"
    "set_tests_properties([==[${PREFIX}${name}]==] PROPERTIES LABELS [==[${LABELS}]==]"
    " WORKING_DIRECTORY [==[${WORKING_DIRECTORY}]==] FAIL_REGULAR_EXPRESSION [==[test cases: +0 [|]]==])\n")
endwhile()
file(WRITE ${OUTPUT} "${script}")
