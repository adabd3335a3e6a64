// The file of a UNIX socket this process bound. At exit it is removed only if it is still the
// one this process made (same device and inode): a successor that started while this instance
// was still stopping may have bound a new socket at the same path, and removing that one would
// leave the successor unreachable.
#pragma once
#include <sys/stat.h>
#include <unistd.h>

#include <string>

namespace maildict::server {

class SocketFile {
 public:
  // Call right after bind(): notes which file the path names now.
  void bound(const std::string& path) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) return;
    path_ = path;
    dev_ = st.st_dev;
    ino_ = st.st_ino;
  }

  bool is_bound() const { return !path_.empty(); }

  // Removes the file if it is still ours; false when it was replaced (or is gone).
  bool remove_if_ours() {
    if (path_.empty()) return false;
    struct stat st {};
    bool ours = ::lstat(path_.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == dev_ && st.st_ino == ino_;
    if (ours) ::unlink(path_.c_str());
    path_.clear();
    return ours;
  }

 private:
  std::string path_;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
};

}  // namespace maildict::server
