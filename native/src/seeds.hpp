// seeds.hpp - pseudo-identity seeds: per-track seeds (as Python) and the seed -> z derivation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace styleid {

// BLAKE2b (RFC 7693) unkeyed digest of `data` with an `out_len`-byte output (1..64).
void blake2b(const uint8_t *data, size_t len, uint8_t *out, size_t out_len);

// 63 bits of BLAKE2b-64 over "styleid-edge/track/<run_seed>/<track_id>", little-endian:
// the same value as styleid_edge.runtime.track.track_seed.
uint64_t track_seed(uint64_t run_seed, int64_t track_id);

// z of a seed: a SplitMix64 stream from `seed`; each pair of outputs u1, u2 (53-bit uniforms in (0, 1])
// gives two normals by Box-Muller, sqrt(-2 ln u1) * (cos, sin)(2 pi u2), computed in double, stored as float.
void seed_z(uint64_t seed, float *z, size_t dim);

}  // namespace styleid
