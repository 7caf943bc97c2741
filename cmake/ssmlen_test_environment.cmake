# Included by ctest before it runs anything (TEST_INCLUDE_FILES of the top directory). ctest runs several tests at
# once, and libgomp's spinning threads slow down by orders of magnitude when the machine is oversubscribed (two test
# processes of 2 threads each on 2 cores turned 10 s gradient checks into 180 s), so each test process gets one
# OpenMP thread unless OMP_NUM_THREADS is already set. Tests of thread-count independence set 1 and 2 threads
# themselves.
if(NOT DEFINED ENV{OMP_NUM_THREADS})
  set(ENV{OMP_NUM_THREADS} 1)
endif()
