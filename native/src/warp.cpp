// warp.cpp - see warp.hpp. Single-threaded loops over the destination rows; the coordinate arithmetic is
// cv::warpAffine's (imgwarp.cpp, OpenCV 4.6-4.10) and the sampling is cv::remap's bilinear kernel.
#include "warp.hpp"

#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace styleid {

namespace {

constexpr int kInterBits = 5;                 // cv::INTER_BITS
constexpr int kTab = 1 << kInterBits;         // cv::INTER_TAB_SIZE
constexpr int kAbBits = 10;                   // max(10, INTER_BITS)
constexpr int kAbScale = 1 << kAbBits;
constexpr int kCoefBits = 15;                 // INTER_REMAP_COEF_BITS
constexpr int kRoundLinear = kAbScale / kTab / 2;
constexpr int kRoundNearest = kAbScale / 2;

// Bilinear weights per 1/32 px sub-position (ty * 32 + tx): w = {(1-fy)(1-fx), (1-fy)fx, fy(1-fx), fy fx}.
// The products are multiples of 1/1024, exact in float and, times 2^15, exact integers. (OpenCV stores the
// (0, 0) cell as {32767, 0, 0, 1} in int16; for 8-bit pixels that rounds to the same value as {32768, 0, 0, 0}.)
struct WeightTables {
    int q15[kTab * kTab][4];
    float f32[kTab * kTab][4];
    WeightTables() {
        const float scale = 1.f / kTab;
        for (int ty = 0; ty < kTab; ++ty)
            for (int tx = 0; tx < kTab; ++tx) {
                const float fy = ty * scale, fx = tx * scale;
                const float ky[2] = {1.f - fy, fy}, kx[2] = {1.f - fx, fx};
                for (int k = 0; k < 4; ++k) {
                    const float v = ky[k / 2] * kx[k % 2];
                    f32[ty * kTab + tx][k] = v;
                    q15[ty * kTab + tx][k] = static_cast<int>(v * (1 << kCoefBits));
                }
            }
    }
};

const WeightTables &tables() {
    static const WeightTables t;  // static storage: built once, no heap
    return t;
}

inline int clip(int x, int lo, int hi) { return x >= lo ? (x < hi ? x : hi - 1) : lo; }  // OpenCV's clip

inline int reflect101(int p, int len) {  // cv::borderInterpolate(BORDER_REFLECT_101)
    if (static_cast<unsigned>(p) < static_cast<unsigned>(len)) return p;
    if (len == 1) return 0;
    do {
        p = p < 0 ? -p : len - 1 - (p - len) - 1;
    } while (static_cast<unsigned>(p) >= static_cast<unsigned>(len));
    return p;
}

// One destination pixel from integer source coordinates (sx, sy) and weight-table index a.
template <typename T, int CN>
struct Sampler {
    const T *base;
    size_t step;  // elements per source row
    int w, h;
    Border border;
    const WeightTables &tab;

    inline T mix(T v0, T v1, T v2, T v3, int a) const {
        if constexpr (std::is_same_v<T, uint8_t>) {
            const int *k = tab.q15[a];
            return static_cast<uint8_t>((v0 * k[0] + v1 * k[1] + v2 * k[2] + v3 * k[3] + (1 << (kCoefBits - 1))) >> kCoefBits);
        } else {
            const float *k = tab.f32[a];
            return v0 * k[0] + v1 * k[1] + v2 * k[2] + v3 * k[3];
        }
    }

    inline void operator()(int sx, int sy, int a, T *d) const {
        if (static_cast<unsigned>(sx) < static_cast<unsigned>(w - 1) && static_cast<unsigned>(sy) < static_cast<unsigned>(h - 1)) {
            const T *s = base + sy * step + sx * CN;
            for (int c = 0; c < CN; ++c) d[c] = mix(s[c], s[c + CN], s[c + step], s[c + step + CN], a);
            return;
        }
        if (border == Border::Constant && (sx >= w || sx + 1 < 0 || sy >= h || sy + 1 < 0)) {
            for (int c = 0; c < CN; ++c) d[c] = T(0);
            return;
        }
        int x0, x1, y0, y1;
        if (border == Border::Replicate) {
            x0 = clip(sx, 0, w), x1 = clip(sx + 1, 0, w), y0 = clip(sy, 0, h), y1 = clip(sy + 1, 0, h);
        } else if (border == Border::Reflect101) {
            x0 = reflect101(sx, w), x1 = reflect101(sx + 1, w), y0 = reflect101(sy, h), y1 = reflect101(sy + 1, h);
        } else {  // constant: a neighbour outside is 0
            auto in = [](int p, int len) { return static_cast<unsigned>(p) < static_cast<unsigned>(len) ? p : -1; };
            x0 = in(sx, w), x1 = in(sx + 1, w), y0 = in(sy, h), y1 = in(sy + 1, h);
        }
        for (int c = 0; c < CN; ++c) {
            auto at = [&](int x, int y) { return x >= 0 && y >= 0 ? base[y * step + x * CN + c] : T(0); };
            d[c] = mix(at(x0, y0), at(x1, y0), at(x0, y1), at(x1, y1), a);
        }
    }
};

// The source coordinates warpAffine computes for destination row y, in 1/1024 px with `round` added.
struct RowCoords {
    int X0, Y0;
    double m00, m10;
    RowCoords(const cv::Matx23d &M, int y, int round)
        : X0(wrap_add(cv::saturate_cast<int>((M(0, 1) * y + M(0, 2)) * kAbScale), round)),
          Y0(wrap_add(cv::saturate_cast<int>((M(1, 1) * y + M(1, 2)) * kAbScale), round)),
          m00(M(0, 0)),
          m10(M(1, 0)) {}
    int X(int x) const { return wrap_add(X0, cv::saturate_cast<int>(m00 * x * kAbScale)); }
    int Y(int x) const { return wrap_add(Y0, cv::saturate_cast<int>(m10 * x * kAbScale)); }
    // bilinear (row made with kRoundLinear): integer source pixel and 1/32 px weight-table index of column x
    void linear(int x, short &sx, short &sy, int &a) const {
        const int X = this->X(x) >> (kAbBits - kInterBits), Y = this->Y(x) >> (kAbBits - kInterBits);
        sx = cv::saturate_cast<short>(X >> kInterBits);
        sy = cv::saturate_cast<short>(Y >> kInterBits);
        a = (Y & (kTab - 1)) * kTab + (X & (kTab - 1));
    }
};

void check_source(const cv::Mat &src, const char *what) {
    const int t = src.type();
    if (t != CV_8UC1 && t != CV_8UC3 && t != CV_32FC1)
        throw std::invalid_argument(std::string(what) + ": only CV_8UC1, CV_8UC3 and CV_32FC1 images");
    if (src.empty()) throw std::invalid_argument(std::string(what) + ": empty source image");
}

template <typename T, int CN>
void warp_rows(const cv::Mat &src, cv::Mat &dst, const cv::Matx23d &M, Border border) {
    const Sampler<T, CN> sample{src.ptr<T>(), src.step / sizeof(T), src.cols, src.rows, border, tables()};
    for (int y = 0; y < dst.rows; ++y) {
        const RowCoords row(M, y, kRoundLinear);
        T *d = dst.ptr<T>(y);
        for (int x = 0; x < dst.cols; ++x, d += CN) {
            short sx, sy;
            int a;
            row.linear(x, sx, sy, a);
            sample(sx, sy, a, d);
        }
    }
}

template <typename T, int CN>
void remap_rows(const cv::Mat &src, cv::Mat &dst, const cv::Mat &map_xy, const cv::Mat &map_a, Border border) {
    const Sampler<T, CN> sample{src.ptr<T>(), src.step / sizeof(T), src.cols, src.rows, border, tables()};
    for (int y = 0; y < dst.rows; ++y) {
        const short *xy = map_xy.ptr<short>(y);
        const ushort *a = map_a.ptr<ushort>(y);
        T *d = dst.ptr<T>(y);
        for (int x = 0; x < dst.cols; ++x, d += CN) sample(xy[2 * x], xy[2 * x + 1], a[x] & (kTab * kTab - 1), d);
    }
}

}  // namespace

cv::Matx23d warp_inverse(const cv::Matx23d &m, bool inverse_map) {
    if (inverse_map) return m;
    double M[6] = {m(0, 0), m(0, 1), m(0, 2), m(1, 0), m(1, 1), m(1, 2)};
    double D = M[0] * M[4] - M[1] * M[3];
    D = D != 0 ? 1. / D : 0;
    const double a11 = M[4] * D, a22 = M[0] * D;
    M[0] = a11;
    M[1] *= -D;
    M[3] *= -D;
    M[4] = a22;
    const double b1 = -M[0] * M[2] - M[1] * M[5];
    const double b2 = -M[3] * M[2] - M[4] * M[5];
    return cv::Matx23d(M[0], M[1], b1, M[3], M[4], b2);
}

void warp_affine_linear(const cv::Mat &src, cv::Mat &dst, const cv::Matx23d &m, cv::Size size, Border border,
                        bool inverse_map) {
    check_source(src, "warp_affine_linear");
    if (src.data == dst.data) throw std::invalid_argument("warp_affine_linear: in-place warps are not supported");
    dst.create(size, src.type());
    const cv::Matx23d M = warp_inverse(m, inverse_map);
    switch (src.type()) {
        case CV_8UC1: warp_rows<uint8_t, 1>(src, dst, M, border); break;
        case CV_8UC3: warp_rows<uint8_t, 3>(src, dst, M, border); break;
        default: warp_rows<float, 1>(src, dst, M, border); break;
    }
}

void warp_affine_maps(const cv::Matx23d &m, cv::Size size, cv::Mat &map_xy, cv::Mat &map_a, bool inverse_map) {
    map_xy.create(size, CV_16SC2);
    map_a.create(size, CV_16UC1);
    const cv::Matx23d M = warp_inverse(m, inverse_map);
    for (int y = 0; y < size.height; ++y) {
        const RowCoords row(M, y, kRoundLinear);
        short *xy = map_xy.ptr<short>(y);
        ushort *a = map_a.ptr<ushort>(y);
        for (int x = 0; x < size.width; ++x) {
            int index;
            row.linear(x, xy[2 * x], xy[2 * x + 1], index);
            a[x] = static_cast<ushort>(index);
        }
    }
}

void warp_affine_nearest_inside(cv::Size src_size, cv::Mat &dst, const cv::Matx23d &m, cv::Size size, bool inverse_map) {
    dst.create(size, CV_8UC1);
    const cv::Matx23d M = warp_inverse(m, inverse_map);
    for (int y = 0; y < size.height; ++y) {
        const RowCoords row(M, y, kRoundNearest);
        uint8_t *d = dst.ptr<uint8_t>(y);
        for (int x = 0; x < size.width; ++x) {
            const int sx = cv::saturate_cast<short>(row.X(x) >> kAbBits), sy = cv::saturate_cast<short>(row.Y(x) >> kAbBits);
            d[x] = static_cast<unsigned>(sx) < static_cast<unsigned>(src_size.width) &&
                           static_cast<unsigned>(sy) < static_cast<unsigned>(src_size.height)
                       ? 255
                       : 0;
        }
    }
}

void remap_linear_fixed(const cv::Mat &src, cv::Mat &dst, const cv::Mat &map_xy, const cv::Mat &map_a, Border border) {
    check_source(src, "remap_linear_fixed");
    if (map_xy.type() != CV_16SC2 || map_a.type() != CV_16UC1 || map_xy.size() != map_a.size())
        throw std::invalid_argument("remap_linear_fixed: maps must be CV_16SC2 + CV_16UC1 of one size");
    if (src.data == dst.data) throw std::invalid_argument("remap_linear_fixed: in-place remaps are not supported");
    dst.create(map_xy.size(), src.type());
    switch (src.type()) {
        case CV_8UC1: remap_rows<uint8_t, 1>(src, dst, map_xy, map_a, border); break;
        case CV_8UC3: remap_rows<uint8_t, 3>(src, dst, map_xy, map_a, border); break;
        default: remap_rows<float, 1>(src, dst, map_xy, map_a, border); break;
    }
}

}  // namespace styleid
