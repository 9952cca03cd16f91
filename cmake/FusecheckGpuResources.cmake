# CTest resource allocation for GPU work (docs/distributed.md). With
# `ctest --resource-spec-file SPEC -j N` (SPEC from scripts/resource-spec: one "gpus"
# resource per GPU with FUSECHECK_GPU_SLOTS slots), CTest runs at once only what the GPUs
# hold, and scripts/ctest-pin pins each test process to the GPUs it was given
# (CUDA_VISIBLE_DEVICES). Correctness work shares a GPU (one slot); timed work takes a
# whole GPU (every slot), since a kernel timed beside another one is not timed. Without a
# spec file CTest ignores RESOURCE_GROUPS and the pin runs the test unchanged.
set(FUSECHECK_GPU_SLOTS 4 CACHE STRING "Slots per GPU in the CTest resource spec (scripts/resource-spec --slots)")
set(FUSECHECK_CTEST_PIN "${CMAKE_CURRENT_LIST_DIR}/../scripts/ctest-pin")
cmake_path(NORMAL_PATH FUSECHECK_CTEST_PIN)
set(FUSECHECK_GPU_SHARED "gpus:1")
set(FUSECHECK_GPU_WHOLE "gpus:${FUSECHECK_GPU_SLOTS}")

# fusecheck_gpu_test(NAME SHARED|WHOLE COMMAND ...): a CTest test that runs pinned to the
# GPU CTest allocates it, on one slot (SHARED) or a whole GPU (WHOLE).
function(fusecheck_gpu_test name share)
  cmake_parse_arguments(ARG "" "" "COMMAND" ${ARGN})
  add_test(NAME ${name} COMMAND "${FUSECHECK_CTEST_PIN}" ${ARG_COMMAND})
  set_tests_properties(${name} PROPERTIES RESOURCE_GROUPS "${FUSECHECK_GPU_${share}}")
endfunction()
