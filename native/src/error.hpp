// error.hpp - the one exception type of the library: a status code and a message for the caller.
#pragma once

#include <stdexcept>
#include <string>

#include "styleid_edge.h"

namespace styleid {

class Error : public std::runtime_error {
public:
    Error(styleid_edge_status status, const std::string &message)
        : std::runtime_error(message), status_(status) {}
    styleid_edge_status status() const { return status_; }

private:
    styleid_edge_status status_;
};

}  // namespace styleid
