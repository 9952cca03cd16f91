# Precompiled headers for the host C++ code (FUSECHECK_PCH in the top CMakeLists.txt).
#
# Why: every translation unit parses the same standard and third-party headers (Eigen, fmt,
# nlohmann-json, CLI11, GoogleTest) and CI builds everything twice. Measured on the 2-core
# dev box: the clang ASan build takes 0.55x the CPU time with them (clang loads a PCH
# lazily); gcc's Release build gains ~7%, nearly all in the tests (gcc maps the whole
# ~150 MB file into every compile, and its time goes to instantiation and code generation).
# A PCH is only valid for the flags it was built with (_OPENMP, -fPIC/-fPIE, a macro a
# header tests: gcc then ignores it with -Winvalid-pch, clang stops with an error), so
# targets are grouped by the flags that matter and each group of several shares one PCH
# (REUSE_FROM) built by a tiny donor object library that has exactly that group's flags.
#
# fusecheck_precompile_headers() runs once at the end of the top CMakeLists.txt, when every
# target exists; new libraries and tests are picked up without edits here. CUDA sources
# are untouched (the PCH is CXX-only). Only third-party and standard headers go in it, so
# project headers keep their warnings. A target opts out with
#   set_target_properties(T PROPERTIES FUSECHECK_NO_PCH ON)

# Standard headers most of the sources include, and the third-party ones that cost the most.
set(FUSECHECK_PCH_STD_HEADERS
  <algorithm> <array> <chrono> <cmath> <cstdint> <cstdio> <cstring> <filesystem> <fstream>
  <functional> <limits> <map> <memory> <numeric> <optional> <random> <set> <span> <sstream>
  <stdexcept> <string> <string_view> <vector>)
set(FUSECHECK_PCH_BASE_HEADERS ${FUSECHECK_PCH_STD_HEADERS}
  <Eigen/Core> <fmt/core.h> <nlohmann/json.hpp>)
# Only for the groups that use them: CLI11 defines static validator objects that every
# including translation unit constructs, so it must not reach code that does not use it.
set(FUSECHECK_PCH_GTEST_HEADERS <gtest/gtest.h>)
set(FUSECHECK_PCH_CLI_HEADERS <CLI/CLI.hpp>)

# _fusecheck_pch_reach(TARGET OUT): every link item whose usage requirements (compile flags,
# definitions) reach TARGET: its direct link libraries, then their INTERFACE_LINK_LIBRARIES
# transitively. $<LINK_ONLY:...> items (a static library's private deps) carry no flags.
function(_fusecheck_pch_reach target out)
  get_target_property(items ${target} LINK_LIBRARIES)
  if(NOT items)
    set(items "")
  endif()
  set(seen "")
  while(items)
    list(POP_FRONT items item)
    if(item MATCHES "^\\$<LINK_ONLY:" OR item IN_LIST seen)
      continue()
    endif()
    list(APPEND seen ${item})
    if(TARGET ${item})
      get_target_property(aliased ${item} ALIASED_TARGET)
      if(aliased)
        list(APPEND items ${aliased})
      endif()
      get_target_property(iface ${item} INTERFACE_LINK_LIBRARIES)
      if(iface)
        list(APPEND items ${iface})
      endif()
    endif()
  endwhile()
  set(${out} ${seen} PARENT_SCOPE)
endfunction()

# _fusecheck_pch_targets(DIR OUT): the build-system targets of DIR and its subdirectories.
function(_fusecheck_pch_targets dir out)
  get_property(targets DIRECTORY ${dir} PROPERTY BUILDSYSTEM_TARGETS)
  get_property(subdirs DIRECTORY ${dir} PROPERTY SUBDIRECTORIES)
  foreach(sub ${subdirs})
    _fusecheck_pch_targets(${sub} sub_targets)
    list(APPEND targets ${sub_targets})
  endforeach()
  set(${out} ${targets} PARENT_SCOPE)
endfunction()

function(fusecheck_precompile_headers)
  # The OpenMP target of reference/ and harness/run is local to those directories.
  find_package(OpenMP)
  set(stub ${CMAKE_BINARY_DIR}/fusecheck_pch_stub.cpp)
  file(CONFIGURE OUTPUT ${stub} CONTENT "// Donor of a shared precompiled header (cmake/FusecheckPch.cmake).\n")

  _fusecheck_pch_targets(${CMAKE_SOURCE_DIR} targets)
  set(keys "")
  foreach(target ${targets})
    get_target_property(type ${target} TYPE)
    if(NOT type MATCHES "^(STATIC_LIBRARY|SHARED_LIBRARY|OBJECT_LIBRARY|EXECUTABLE)$")
      continue()
    endif()
    get_target_property(opt_out ${target} FUSECHECK_NO_PCH)
    get_target_property(sources ${target} SOURCES)
    get_target_property(source_dir ${target} SOURCE_DIR)
    # The fuzz build compiles its readers with libFuzzer flags of its own.
    if(opt_out OR NOT sources MATCHES "\\.(cpp|cc|cxx)(;|$)" OR source_dir MATCHES "/fuzz$")
      continue()
    endif()

    _fusecheck_pch_reach(${target} reach)
    set(key "cxx")
    set(libs Eigen3::Eigen fmt::fmt nlohmann_json::nlohmann_json)
    set(headers ${FUSECHECK_PCH_BASE_HEADERS})
    # -fopenmp defines _OPENMP, which Eigen tests.
    if("OpenMP::OpenMP_CXX" IN_LIST reach AND TARGET OpenMP::OpenMP_CXX)
      string(APPEND key "_omp")
      list(APPEND libs OpenMP::OpenMP_CXX)
    endif()
    if("GTest::gtest" IN_LIST reach OR "GTest::gtest_main" IN_LIST reach OR "GTest::GTest" IN_LIST reach)
      string(APPEND key "_gtest")
      list(APPEND libs GTest::gtest)
      list(APPEND headers ${FUSECHECK_PCH_GTEST_HEADERS})
    endif()
    if("CLI11::CLI11" IN_LIST reach)
      string(APPEND key "_cli")
      list(APPEND libs CLI11::CLI11)
      list(APPEND headers ${FUSECHECK_PCH_CLI_HEADERS})
    endif()
    get_target_property(pic ${target} POSITION_INDEPENDENT_CODE)
    if(pic)
      set(pic ON)
      string(APPEND key "_pic")
    else()
      set(pic OFF)
    endif()

    if(NOT key IN_LIST keys)
      list(APPEND keys "${key}")
      set(libs${key} ${libs})
      set(headers${key} ${headers})
      set(pic${key} ${pic})
    endif()
    list(APPEND members${key} ${target})
  endforeach()

  # A group of one target precompiles for itself; larger groups share a donor's PCH.
  set(groups "")
  foreach(key ${keys})
    list(TRANSFORM headers${key} PREPEND "$<$<COMPILE_LANGUAGE:CXX>:" OUTPUT_VARIABLE pch_items)
    list(TRANSFORM pch_items APPEND ">")
    list(LENGTH members${key} count)
    if(count EQUAL 1)
      target_precompile_headers(${members${key}} PRIVATE ${pch_items})
      list(APPEND groups ${members${key}})
      continue()
    endif()
    set(donor fusecheck_pch_${key})
    add_library(${donor} OBJECT ${stub})
    target_link_libraries(${donor} PRIVATE ${libs${key}})
    set_target_properties(${donor} PROPERTIES POSITION_INDEPENDENT_CODE ${pic${key}})
    target_precompile_headers(${donor} PRIVATE ${pch_items})
    foreach(target ${members${key}})
      target_precompile_headers(${target} REUSE_FROM ${donor})
    endforeach()
    list(APPEND groups "${donor}(${count})")
  endforeach()
  message(STATUS "fusecheck: precompiled headers ${groups}")
endfunction()
