// pack.cpp - manifest.json reader with the same checks as styleid_edge/runtime/pack.py.
#include "pack.hpp"

#include <filesystem>

#include "error.hpp"
#include "json.hpp"

namespace fs = std::filesystem;

namespace styleid {

namespace {

const char *const kModelRoles[] = {"mapping", "affine", "synthesis", "encoder", "recognizer", "mapper"};
const char *const kRequiredRoles[] = {"mapping", "affine", "synthesis"};
const char *const kKnownFields[] = {"resolution", "n_latent", "style_dim", "channel_multiplier", "style_layers",
                                    "latent_avg", "files", "recognizer", "ranks", "defaults", "provenance",
                                    "synthetic", "licences", "format_version"};
constexpr int kFormatVersion = 1;

bool is_plain_name(const std::string &name) {
    if (name.empty() || name[0] == '/' || name.find('\\') != std::string::npos) return false;
    fs::path p(name);
    int parts = 0;
    for (const auto &part : p) {
        if (part == "..") return false;
        ++parts;
    }
    return parts <= 2;
}

int log2_exact(int resolution) {
    int log_size = 0;
    while ((1 << log_size) < resolution) ++log_size;
    if (resolution < 8 || (1 << log_size) != resolution || resolution > 1024) return -1;
    return log_size;
}

}  // namespace

std::vector<StyleLayer> stylespace_layout(int resolution, int channel_multiplier) {
    int log_size = log2_exact(resolution);
    if (log_size < 0)
        throw Error(STYLEID_EDGE_ERR_PACK, "resolution must be a power of two from 8 to 1024, got " +
                                               std::to_string(resolution));
    auto ch = [&](int res) {
        int cm = channel_multiplier;
        switch (res) {
            case 4: case 8: case 16: case 32: return 512;
            case 64: return 256 * cm;
            case 128: return 128 * cm;
            case 256: return 64 * cm;
            case 512: return 32 * cm;
            default: return 16 * cm;
        }
    };
    std::vector<StyleLayer> layers;
    layers.push_back({"conv1", ch(4), 0, false, 4});
    layers.push_back({"to_rgb1", ch(4), 1, true, 4});
    for (int k = 0, log_res = 3; log_res <= log_size; ++k, ++log_res) {
        int res = 1 << log_res;
        layers.push_back({"convs." + std::to_string(2 * k), ch(res / 2), 1 + 2 * k, false, res});
        layers.push_back({"convs." + std::to_string(2 * k + 1), ch(res), 2 + 2 * k, false, res});
        layers.push_back({"to_rgbs." + std::to_string(k), ch(res), 3 + 2 * k, true, res});
    }
    return layers;
}

int Pack::n_styles() const {
    int total = 0;
    for (const auto &l : layers) total += l.size;
    return total;
}

// Checked by name (no absolute path, no ".."), not by where it resolves: a model file may be a symlink to
// shared storage (a read-only partition on an appliance).
std::string Pack::path(const std::string &name) const {
    if (!is_plain_name(name)) throw Error(STYLEID_EDGE_ERR_PACK, root + ": '" + name + "' points outside the pack");
    return (fs::weakly_canonical(fs::path(root)) / name).string();
}

std::string Pack::model_path(const std::string &role) const {
    auto it = files.find(role);
    if (it == files.end())
        throw Error(STYLEID_EDGE_ERR_PACK, root + ": this pack has no " + role +
                                               " model; re-export it with `styleid-edge export` including it");
    return path(it->second);
}

Pack load_pack(const std::string &root) {
    fs::path mpath = fs::path(root) / "manifest.json";
    const std::string where = mpath.string();
    if (!fs::is_regular_file(mpath))
        throw Error(STYLEID_EDGE_ERR_PACK, root + ": not a model pack (no manifest.json). Make one with "
                                           "`styleid-edge export` and pass its directory.");
    JsonValue doc;
    try {
        doc = parse_json_file(where);
    } catch (const std::exception &e) {
        throw Error(STYLEID_EDGE_ERR_PACK, where + ": unreadable manifest (" + e.what() +
                                               "); re-export the pack with `styleid-edge export`");
    }
    auto need = [&](bool cond, const std::string &msg) {
        if (!cond) throw Error(STYLEID_EDGE_ERR_PACK, where + ": " + msg);
    };
    need(doc.is_object(), "expected a JSON object");
    for (const auto &kv : doc.members) {
        bool known = false;
        for (const char *f : kKnownFields) known = known || kv.first == f;
        need(known, "unknown field '" + kv.first + "'; is this pack from a newer styleid-edge?");
    }
    auto positive_int = [&](const char *key) {
        const JsonValue *v = doc.find(key);
        need(v && v->is_number() && v->integral && v->number > 0 && v->number < 1e9,
             std::string(key) + " must be a positive integer");
        return static_cast<int>(v->number);
    };
    const JsonValue *version = doc.find("format_version");
    int fv = version && version->is_number() ? static_cast<int>(version->number) : kFormatVersion;
    need(fv == kFormatVersion, "format_version " + std::to_string(fv) + " is not supported (this runtime reads " +
                                   std::to_string(kFormatVersion) + ")");
    Pack pack;
    pack.root = root;
    pack.resolution = positive_int("resolution");
    pack.n_latent = positive_int("n_latent");
    pack.style_dim = positive_int("style_dim");
    pack.channel_multiplier = positive_int("channel_multiplier");
    std::vector<StyleLayer> expected;
    try {
        expected = stylespace_layout(pack.resolution, pack.channel_multiplier);
    } catch (const Error &e) {
        need(false, e.what());
    }
    const JsonValue *layers = doc.find("style_layers");
    need(layers && layers->is_array(), "style_layers must be a list");
    for (const auto &item : layers->items) {
        const JsonValue *name = item.find("name"), *size = item.find("size"), *w = item.find("w_index"),
                        *torgb = item.find("is_torgb"), *res = item.find("resolution");
        need(name && name->is_string() && size && size->is_number() && w && w->is_number() && torgb &&
                 torgb->is_bool() && res && res->is_number() && item.members.size() == 5,
             "style_layers entries are malformed");
        pack.layers.push_back({name->text, static_cast<int>(size->number), static_cast<int>(w->number),
                               torgb->boolean, static_cast<int>(res->number)});
    }
    bool same = pack.layers.size() == expected.size();
    for (size_t i = 0; same && i < expected.size(); ++i) {
        const auto &a = pack.layers[i], &b = expected[i];
        same = a.name == b.name && a.size == b.size && a.w_index == b.w_index && a.is_torgb == b.is_torgb &&
               a.resolution == b.resolution;
    }
    need(same, "style_layers do not match the generator layout for this resolution");
    int max_w = 0;
    for (const auto &l : pack.layers) max_w = std::max(max_w, l.w_index);
    need(pack.n_latent == max_w + 1, "n_latent does not match style_layers");
    const JsonValue *avg = doc.find("latent_avg");
    need(avg && avg->is_array() && static_cast<int>(avg->items.size()) == pack.style_dim,
         "latent_avg must be " + std::to_string(pack.style_dim) + " numbers");
    for (const auto &v : avg->items) {
        need(v.is_number(), "latent_avg must be " + std::to_string(pack.style_dim) + " numbers");
        pack.latent_avg.push_back(static_cast<float>(v.number));
    }
    auto read_names = [&](const char *key, std::map<std::string, std::string> &out, bool required) {
        const JsonValue *obj = doc.find(key);
        if (!obj) {
            need(!required, std::string(key) + " must be an object");
            return;
        }
        need(obj->is_object(), std::string(key) + " must be an object");
        for (const auto &kv : obj->members) {
            need(kv.second.is_string() && is_plain_name(kv.second.text),
                 "file for '" + kv.first + "' must be a plain file name inside the pack");
            out[kv.first] = kv.second.text;
        }
    };
    read_names("files", pack.files, true);
    read_names("ranks", pack.ranks, false);
    for (const auto &kv : pack.files) {
        bool known = false;
        for (const char *r : kModelRoles) known = known || kv.first == r;
        need(known, "unknown model role '" + kv.first + "'");
    }
    for (const char *r : kRequiredRoles) need(pack.files.count(r) != 0, std::string("the pack lacks required model ") + r);
    for (const char *key : {"recognizer", "defaults", "provenance"}) {
        const JsonValue *v = doc.find(key);
        need(!v || v->is_object(), std::string(key) + " must be an object");
    }
    if (const JsonValue *defaults = doc.find("defaults")) {
        if (const JsonValue *strength = defaults->find("strength")) {
            if (strength->is_object())
                for (const auto &kv : strength->members)
                    if (kv.second.is_number()) pack.strength_defaults[kv.first] = kv.second.number;
        }
    }
    if (const JsonValue *syn = doc.find("synthetic")) {
        need(syn->is_bool(), "synthetic must be true or false");
        pack.synthetic = syn->boolean;
    }
    std::map<std::string, std::string> all = pack.files;
    all.insert(pack.ranks.begin(), pack.ranks.end());
    for (const auto &kv : all) {
        std::string p = pack.path(kv.second);
        need(fs::is_regular_file(p), kv.first + " file '" + kv.second + "' is missing from the pack directory");
    }
    return pack;
}

}  // namespace styleid
