# StyleidEdgeDeps.cmake - dependencies of the native runtime.
#
# OpenVINO: a system install (OpenVINO_DIR or the default prefixes) or the `openvino` PyPI wheel, whose
# cmake folder is found by asking the Python interpreter (-DPython3_EXECUTABLE=..., an activated
# virtualenv, or python3 on PATH): python -c "import openvino; ..." -> <site-packages>/openvino/cmake.
# OpenCV: find_package(OpenCV) (Debian: apt-get install libopencv-dev).
# TensorRT: optional; STYLEID_EDGE_HAVE_TENSORRT is set when NvInfer.h is found (not used by default).

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

find_path(STYLEID_EDGE_TENSORRT_INCLUDE NvInfer.h PATHS /usr/include/aarch64-linux-gnu /usr/include/x86_64-linux-gnu
          /usr/local/tensorrt/include)
if(STYLEID_EDGE_TENSORRT_INCLUDE)
  set(STYLEID_EDGE_HAVE_TENSORRT ON)
  message(STATUS "styleid-edge: TensorRT headers found in ${STYLEID_EDGE_TENSORRT_INCLUDE} (backend not built yet)")
endif()
