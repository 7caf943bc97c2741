# ssmlen_discover_tests(<target> PREFIX <prefix> LABELS <label>...): one ctest test per doctest test case, listed
# after each build (like doctest_discover_tests), with two fixes to doctest 2.4's module:
# - a ';' in a test case name no longer splits it into two tests that each match nothing;
# - a test whose filter matches no test case fails instead of passing with nothing run.
set(_ssmlen_doctest_add_tests ${CMAKE_CURRENT_LIST_DIR}/ssmlen_doctest_add_tests.cmake)

function(ssmlen_discover_tests target)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "PREFIX" "LABELS")
  set(tests_file ${CMAKE_CURRENT_BINARY_DIR}/${target}_tests.cmake)
  add_custom_command(TARGET ${target} POST_BUILD
    COMMAND ${CMAKE_COMMAND} -DEXECUTABLE=$<TARGET_FILE:${target}> -DPREFIX=${arg_PREFIX} -DLABELS=${arg_LABELS}
            -DWORKING_DIRECTORY=${CMAKE_CURRENT_BINARY_DIR} -DOUTPUT=${tests_file} -P ${_ssmlen_doctest_add_tests}
    BYPRODUCTS ${tests_file}
    VERBATIM)
  set(include_file ${CMAKE_CURRENT_BINARY_DIR}/${target}_include.cmake)
  file(WRITE ${include_file}
    "if(EXISTS [==[${tests_file}]==])\n"
    "  include([==[${tests_file}]==])\n"
    "else()\n"
    "  add_test([==[${target}_NOT_BUILT]==] [==[${target}_NOT_BUILT]==])\n"
    "endif()\n")
  set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES ${include_file})
endfunction()
