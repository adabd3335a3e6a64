// Test-only driver for tests/e2e/test_import.py: `maildict-import-driver DATABASE import KIND
// --from URI ...` runs the same run_import_command that maildictctl's dispatcher calls, against
// the directory DATABASE (sqlite:/path or postgresql:<conninfo>). Not installed.
#include <cstdio>
#include <string>

#include "server/maildictctl_import.hpp"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: maildict-import-driver DATABASE import KIND --from URI [options]\n");
    return 1;
  }
  return maildict::server::run_import_command(argc - 2, argv + 2, std::string(argv[1]));
}
