# ctest install_consumer: `cmake --install` the build into a fresh prefix, then build an application against
# it twice, once with find_package(styleid_edge) and once with pkg-config, and run both on the test pack.
#   cmake -DBUILD=<build dir> -DSRC=<this folder> -DWORK=<scratch dir> -DPACK=<pack> -P install_consumer.cmake
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}\n${out}\n${err}")
  endif()
  message(STATUS "${out}")
endfunction()

file(REMOVE_RECURSE "${WORK}")
set(PREFIX "${WORK}/prefix")
run(${CMAKE_COMMAND} --install "${BUILD}" --prefix "${PREFIX}")
# the installed CLI finds the installed library (RPATH $ORIGIN/../lib)
run("${PREFIX}/bin/styleid-edge-rt" --help)

run(${CMAKE_COMMAND} -S "${SRC}/consumer" -B "${WORK}/cmake-build" "-DCMAKE_PREFIX_PATH=${PREFIX}")
run(${CMAKE_COMMAND} --build "${WORK}/cmake-build")
run("${WORK}/cmake-build/consumer" "${PACK}")

find_program(PKG_CONFIG pkg-config)
find_program(CC NAMES cc gcc clang)
if(PKG_CONFIG AND CC)
  file(GLOB pc_dirs "${PREFIX}/lib*/pkgconfig" "${PREFIX}/lib/*/pkgconfig")
  set(ENV{PKG_CONFIG_PATH} "${pc_dirs}")
  execute_process(COMMAND ${PKG_CONFIG} --cflags --libs styleid_edge RESULT_VARIABLE rc OUTPUT_VARIABLE flags
                  ERROR_VARIABLE err OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "pkg-config styleid_edge failed: ${err}")
  endif()
  separate_arguments(flags UNIX_COMMAND "${flags}")
  run(${CC} "${SRC}/consumer/consumer.c" -o "${WORK}/consumer-pc" ${flags})
  run("${WORK}/consumer-pc" "${PACK}")
elseif(DEFINED ENV{STYLEID_EDGE_CI})
  message(FATAL_ERROR "pkg-config or a C compiler not found: CI installs pkg-config (.ci/run)")
else()
  message(STATUS "pkg-config or a C compiler not found: only the find_package consumer was built")
endif()
