# gradvis_torch: an INTERFACE target carrying LibTorch's include dirs, libraries and flags.
#
# Two ways to find LibTorch:
#  * a real LibTorch install (Torch_DIR or CMAKE_PREFIX_PATH pointing at it, or
#    -DGRADVIS_TORCH_FROM=cmake): find_package(Torch);
#  * otherwise the torch wheel of the Python interpreter (Python3_EXECUTABLE or `python3`):
#    its include dirs, libtorch / libtorch_cpu / libc10 with an rpath, and its C++ ABI.  The CUDA
#    build of the wheel has a Torch CMake config that fails without the CUDA toolkit, so it is
#    not used.
if(TARGET gradvis_torch)
  return()
endif()

set(GRADVIS_TORCH_FROM "auto" CACHE STRING "Where LibTorch comes from: auto, cmake or python")

if(GRADVIS_TORCH_FROM STREQUAL "cmake" OR
   (GRADVIS_TORCH_FROM STREQUAL "auto" AND (DEFINED Torch_DIR OR DEFINED ENV{Torch_DIR})))
  find_package(Torch REQUIRED)
  add_library(gradvis_torch INTERFACE)
  target_link_libraries(gradvis_torch INTERFACE ${TORCH_LIBRARIES})
  target_include_directories(gradvis_torch INTERFACE ${TORCH_INCLUDE_DIRS})
  target_compile_options(gradvis_torch INTERFACE ${TORCH_CXX_FLAGS})
  set(GRADVIS_TORCH_LIBRARY_DIR "")
  return()
endif()

if(NOT Python3_EXECUTABLE)
  find_package(Python3 REQUIRED COMPONENTS Interpreter)
endif()
execute_process(
  COMMAND "${Python3_EXECUTABLE}" -c
    "import os, torch; d = os.path.dirname(torch.__file__); print(os.path.join(d, 'include'), os.path.join(d, 'lib'), int(torch._C._GLIBCXX_USE_CXX11_ABI), torch.__version__, sep=';', end='')"
  OUTPUT_VARIABLE _gradvis_torch
  RESULT_VARIABLE _gradvis_torch_status
  ERROR_VARIABLE _gradvis_torch_error)
if(NOT _gradvis_torch_status EQUAL 0)
  message(FATAL_ERROR
    "gradvis: cannot import torch with ${Python3_EXECUTABLE} (${_gradvis_torch_error}). "
    "Install torch for that interpreter, pass -DPython3_EXECUTABLE=..., or point Torch_DIR at a "
    "LibTorch install.")
endif()
list(GET _gradvis_torch 0 _torch_include)
list(GET _gradvis_torch 1 GRADVIS_TORCH_LIBRARY_DIR)
list(GET _gradvis_torch 2 _torch_abi)
list(GET _gradvis_torch 3 GRADVIS_TORCH_VERSION)
message(STATUS "gradvis: LibTorch ${GRADVIS_TORCH_VERSION} from the Python wheel (${GRADVIS_TORCH_LIBRARY_DIR})")

add_library(gradvis_torch INTERFACE)
target_include_directories(gradvis_torch SYSTEM INTERFACE
  "${_torch_include}" "${_torch_include}/torch/csrc/api/include")
foreach(_lib torch torch_cpu c10)
  find_library(GRADVIS_LIB_${_lib} NAMES ${_lib} PATHS "${GRADVIS_TORCH_LIBRARY_DIR}" NO_DEFAULT_PATH REQUIRED)
  target_link_libraries(gradvis_torch INTERFACE "${GRADVIS_LIB_${_lib}}")
endforeach()
target_compile_definitions(gradvis_torch INTERFACE _GLIBCXX_USE_CXX11_ABI=${_torch_abi})
# rpath so that programs find libtorch*.so without LD_LIBRARY_PATH
target_link_options(gradvis_torch INTERFACE "-Wl,-rpath,${GRADVIS_TORCH_LIBRARY_DIR}")
