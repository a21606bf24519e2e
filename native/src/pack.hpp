// pack.hpp - the model pack: manifest.json validated field by field, file names kept inside the pack.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace styleid {

struct StyleLayer {
    std::string name;
    int size = 0;
    int w_index = 0;
    bool is_torgb = false;
    int resolution = 0;
};

struct Pack {
    std::string root;
    int resolution = 0;
    int n_latent = 0;
    int style_dim = 0;
    int channel_multiplier = 0;
    std::vector<StyleLayer> layers;
    std::vector<float> latent_avg;
    std::map<std::string, std::string> files;  // role -> file name
    std::map<std::string, std::string> ranks;  // "channels" / "groups" / ... -> .npy name
    std::map<std::string, double> strength_defaults;  // defaults.strength
    bool synthetic = false;

    int n_styles() const;
    bool has(const std::string &role) const { return files.count(role) != 0; }
    // Absolute path of a role's model; throws Error(PACK) if the pack has none.
    std::string model_path(const std::string &role) const;
    // Absolute path of a file name listed in the manifest.
    std::string path(const std::string &name) const;
};

// Load and validate <root>/manifest.json; every listed file must exist. Throws Error(PACK).
Pack load_pack(const std::string &root);

// The StyleSpace layout of a generator (as styleid_edge.runtime.stylespace.stylespace_layout).
std::vector<StyleLayer> stylespace_layout(int resolution, int channel_multiplier);

}  // namespace styleid
