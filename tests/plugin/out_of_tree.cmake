# CTest script: builds an example plug-in OUT OF TREE against an installed fusecheck, the
# way a team would, then runs it. Steps: `cmake --install` the build tree into a fresh
# prefix; configure and build examples/<EXAMPLE> with only CMAKE_PREFIX_PATH pointing there;
# when RUN is set, `fusecheck paths --plugin` and `fusecheck run --plugin` on the example's
# scenario with the installed binary, and check that the plug-in's path ran, every gate
# held (exit 0) and the results name the plug-in.
# Variables: BUILD_DIR SOURCE_DIR WORK_DIR EXAMPLE LIBRARY PATH_NAME GENERATOR RUN RUN_ARGS
# [CUDA_COMPILER CUDA_ARCHITECTURES]. RUN=GPU runs only when `nvidia-smi -L` lists a GPU.
function(step)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "step failed (exit ${rc}): ${ARGN}\n${out}\n${err}")
  endif()
  set(STEP_OUT "${out}" PARENT_SCOPE)
endfunction()

function(expect_in text what)
  string(FIND "${text}" "${what}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "expected '${what}' in:\n${text}")
  endif()
endfunction()

file(REMOVE_RECURSE ${WORK_DIR})
set(prefix ${WORK_DIR}/prefix)
step(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})
foreach(installed bin/fusecheck include/fusecheck/path_plugin.h include/fusecheck/path_plugin.hpp)
  if(NOT EXISTS ${prefix}/${installed})
    message(FATAL_ERROR "cmake --install did not install ${installed}")
  endif()
endforeach()
set(cuda_args)
if(CUDA_COMPILER)
  list(APPEND cuda_args -DCMAKE_CUDA_COMPILER=${CUDA_COMPILER} -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES})
endif()
step(${CMAKE_COMMAND} -S ${SOURCE_DIR}/examples/${EXAMPLE} -B ${WORK_DIR}/build -G ${GENERATOR}
     -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH=${prefix} ${cuda_args})
step(${CMAKE_COMMAND} --build ${WORK_DIR}/build)
set(plugin ${WORK_DIR}/build/${LIBRARY})
if(NOT EXISTS ${plugin})
  message(FATAL_ERROR "the out-of-tree build made no ${plugin}")
endif()
if(RUN STREQUAL "GPU")
  execute_process(COMMAND nvidia-smi -L RESULT_VARIABLE no_gpu OUTPUT_QUIET ERROR_QUIET)
  if(no_gpu)
    message(STATUS "built ${plugin} out of tree; not run: no GPU (nvidia-smi -L failed)")
    return()
  endif()
endif()

step(${prefix}/bin/fusecheck paths --plugin ${plugin})
expect_in("${STEP_OUT}" "${PATH_NAME}\n")
step(${prefix}/bin/fusecheck run ${SOURCE_DIR}/examples/${EXAMPLE}/scenario.yaml --plugin ${plugin}
     --no-progress --out ${WORK_DIR}/run.h5 ${RUN_ARGS})
expect_in("${STEP_OUT}" "${PATH_NAME}")
expect_in("${STEP_OUT}" "plug-in ${PATH_NAME}")
message(STATUS "${STEP_OUT}")
