// The program behind main(): parses the command line and runs a command with a ModelLoader,
// so tests can run every command with a loader of their own.
#pragma once

#include <iosfwd>
#include <string>
#include <vector>

#include "model.hpp"

namespace edgefleet {

extern const char* const kProgramVersion;

// `args` excludes the program name. Returns the process exit status.
int runMain(const std::vector<std::string>& args, ModelLoader& loader, std::istream& in, std::ostream& out,
            std::ostream& err);

}  // namespace edgefleet
