# StyleidEdgeDeps.cmake - dependencies of the native runtime.
#
# OpenVINO: a system install (OpenVINO_DIR or the default prefixes) or the `openvino` PyPI wheel, whose
# cmake folder is found by asking the Python interpreter (-DPython3_EXECUTABLE=..., an activated
# virtualenv, or python3 on PATH): python -c "import openvino; ..." -> <site-packages>/openvino/cmake.
# OpenCV: find_package(OpenCV) (Debian: apt-get install libopencv-dev).
# TensorRT: optional; STYLEID_EDGE_WITH_TENSORRT is set when TensorRT and CUDA are found (see below).

set(Python3_FIND_VIRTUALENV FIRST)
find_package(Python3 COMPONENTS Interpreter)
find_package(Threads REQUIRED)

find_package(OpenVINO QUIET COMPONENTS Runtime ONNX)
if(NOT OpenVINO_FOUND AND Python3_Interpreter_FOUND)
  execute_process(
    COMMAND "${Python3_EXECUTABLE}" -c "import os, openvino; print(os.path.join(os.path.dirname(openvino.__file__), 'cmake'))"
    OUTPUT_VARIABLE _ov_cmake_dir OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE _ov_rc)
  if(_ov_rc EQUAL 0 AND EXISTS "${_ov_cmake_dir}/OpenVINOConfig.cmake")
    find_package(OpenVINO REQUIRED COMPONENTS Runtime ONNX PATHS "${_ov_cmake_dir}" NO_DEFAULT_PATH)
  endif()
endif()
if(NOT OpenVINO_FOUND)
  message(FATAL_ERROR
    "OpenVINO not found. Install the wheel into the Python that CMake uses (pip install openvino) and pass "
    "-DPython3_EXECUTABLE=/path/to/that/python, or set OpenVINO_DIR to a system install's cmake folder.")
endif()
get_target_property(_ov_location openvino::runtime IMPORTED_LOCATION_RELEASE)
if(NOT _ov_location)
  get_target_property(_ov_location openvino::runtime IMPORTED_LOCATION)
endif()
get_filename_component(STYLEID_EDGE_OPENVINO_LIBDIR "${_ov_location}" DIRECTORY)
message(STATUS "styleid-edge: OpenVINO ${OpenVINO_VERSION} from ${STYLEID_EDGE_OPENVINO_LIBDIR}")

find_package(OpenCV REQUIRED COMPONENTS core imgproc imgcodecs videoio)
set(STYLEID_EDGE_OPENCV_LIBS opencv_core opencv_imgproc opencv_imgcodecs opencv_videoio)
message(STATUS "styleid-edge: OpenCV ${OpenCV_VERSION}")

# TensorRT backend (device "TensorRT"): AUTO builds it when NvInfer.h, libnvinfer and the CUDA toolkit are
# all found (Jetson/JetPack, x86 with TensorRT installed), ON requires them, OFF skips it.
set(STYLEID_EDGE_TENSORRT AUTO CACHE STRING "TensorRT backend: AUTO, ON or OFF")
set_property(CACHE STYLEID_EDGE_TENSORRT PROPERTY STRINGS AUTO ON OFF)
if(NOT STYLEID_EDGE_TENSORRT MATCHES "^(AUTO|ON|OFF)$")
  message(FATAL_ERROR "STYLEID_EDGE_TENSORRT='${STYLEID_EDGE_TENSORRT}': choose AUTO, ON or OFF")
endif()
set(STYLEID_EDGE_WITH_TENSORRT OFF)
if(NOT STYLEID_EDGE_TENSORRT STREQUAL "OFF")
  find_path(STYLEID_EDGE_TENSORRT_INCLUDE NvInfer.h
            HINTS ENV TENSORRT_ROOT PATH_SUFFIXES include
            PATHS /usr/include/aarch64-linux-gnu /usr/include/x86_64-linux-gnu /usr/local/tensorrt/include)
  find_library(STYLEID_EDGE_NVINFER nvinfer HINTS ENV TENSORRT_ROOT PATH_SUFFIXES lib lib64
               PATHS /usr/lib/aarch64-linux-gnu /usr/lib/x86_64-linux-gnu /usr/local/tensorrt/lib)
  find_package(CUDAToolkit QUIET)
  if(STYLEID_EDGE_TENSORRT_INCLUDE AND STYLEID_EDGE_NVINFER AND CUDAToolkit_FOUND)
    set(STYLEID_EDGE_WITH_TENSORRT ON)
    message(STATUS "styleid-edge: TensorRT backend ON (${STYLEID_EDGE_TENSORRT_INCLUDE}, ${STYLEID_EDGE_NVINFER}, "
                   "CUDA ${CUDAToolkit_VERSION})")
  elseif(STYLEID_EDGE_TENSORRT STREQUAL "ON")
    message(FATAL_ERROR "STYLEID_EDGE_TENSORRT=ON but TensorRT is incomplete: NvInfer.h "
                        "'${STYLEID_EDGE_TENSORRT_INCLUDE}', libnvinfer '${STYLEID_EDGE_NVINFER}', CUDA toolkit "
                        "found: ${CUDAToolkit_FOUND}. Install TensorRT and the CUDA toolkit (Jetson: JetPack) or set "
                        "TENSORRT_ROOT")
  else()
    message(STATUS "styleid-edge: TensorRT backend OFF (TensorRT or the CUDA toolkit not found; optional)")
  endif()
endif()
