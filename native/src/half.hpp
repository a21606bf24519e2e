// half.hpp - IEEE 754 binary16 <-> float32 on the host, for TensorRT engines whose inputs or outputs
// are FP16 (strongly typed TensorRT 11 builds of an FP16-converted ONNX).
#pragma once

#include <cstddef>
#include <cstdint>

namespace styleid {

uint16_t float_to_half(float f);  // round to nearest even; overflow -> inf; NaN stays NaN
float half_to_float(uint16_t h);
void floats_to_halves(const float *src, uint16_t *dst, size_t n);
void halves_to_floats(const uint16_t *src, float *dst, size_t n);

}  // namespace styleid
