// The temp-file registry and its SIGINT/SIGTERM cleanup (see temp_files.h).
//
// A signal handler may only call async-signal-safe functions, and removing a folder
// tree is not one of them; so the handler only sets a flag and writes the signal number
// to a pipe, and a watcher thread blocked on that pipe does the removal with ordinary
// code, then restores the default action and raises the signal again. No signal mask
// changes: child processes (scripts/report) see SIGINT as before.
#include "harness/core/temp_files.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <climits>
#include <map>
#include <mutex>
#include <string>
#include <thread>

namespace fusecheck {

namespace {

struct Registry {
  std::mutex mutex;  // held by the watcher from the cleanup until the process dies
  std::map<const RegisteredTemp*, std::filesystem::path> paths;
};
Registry& registry() {
  static Registry r;
  return r;
}

std::atomic<bool> g_interrupted{false};
int g_pipe[2] = {-1, -1};

extern "C" void on_interrupt(int sig) {
  g_interrupted.store(true);
  const unsigned char s = static_cast<unsigned char>(sig);
  const int saved = errno;
  [[maybe_unused]] const auto n = ::write(g_pipe[1], &s, 1);
  errno = saved;
}

// Writer threads may still be adding files to a folder being removed; a few passes
// remove what appeared meanwhile (the folder itself is never created again).
void remove_tree(const std::filesystem::path& p) {
  for (int pass = 0; pass < 50; ++pass) {
    std::error_code ec;
    std::filesystem::remove_all(p, ec);
    if (!std::filesystem::exists(std::filesystem::symlink_status(p, ec))) return;
  }
}

[[noreturn]] void watch() {
  unsigned char sig = 0;
  while (::read(g_pipe[0], &sig, 1) != 1) {
  }
  Registry& r = registry();
  r.mutex.lock();  // never released: registering a new temp now waits for the end
  for (const auto& [owner, path] : r.paths) remove_tree(path);
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  ::sigaction(sig, &dfl, nullptr);
  ::raise(sig);
  ::_exit(128 + sig);  // only if the default action did not end the process
}

// "<final name>.tmp-<digits>" -> (final name, pid); pid 0 when the name is not one.
std::pair<std::string, pid_t> temp_owner(const std::string& name) {
  const auto at = name.rfind(".tmp-");
  if (at == std::string::npos || at == 0) return {"", 0};
  const char* first = name.data() + at + 5;
  const char* last = name.data() + name.size();
  long long pid = 0;
  const auto [end, ec] = std::from_chars(first, last, pid);
  if (ec != std::errc() || end != last || first == last || pid <= 0 || pid > INT_MAX) return {"", 0};
  return {name.substr(0, at), static_cast<pid_t>(pid)};
}

bool process_alive(pid_t pid) {
  if (pid == ::getpid()) return true;
  return ::kill(pid, 0) == 0 || errno != ESRCH;  // EPERM: alive, another user's
}

}  // namespace

std::filesystem::path temp_path_for(const std::filesystem::path& final_path) {
  return final_path.string() + ".tmp-" + std::to_string(::getpid());
}

RegisteredTemp::RegisteredTemp(std::filesystem::path path) : path_(std::move(path)) {
  Registry& r = registry();
  const std::lock_guard lock(r.mutex);
  r.paths[this] = path_;
}

RegisteredTemp::~RegisteredTemp() {
  Registry& r = registry();
  const std::lock_guard lock(r.mutex);
  r.paths.erase(this);
}

void install_interrupt_cleanup() {
  static std::once_flag once;
  std::call_once(once, [] {
    // Without a pipe (no file descriptors left) the signals keep their default action.
    if (::pipe2(g_pipe, O_CLOEXEC) != 0) return;
    std::thread(watch).detach();
    struct sigaction sa {};
    sa.sa_handler = on_interrupt;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    for (int sig : {SIGINT, SIGTERM}) ::sigaction(sig, &sa, nullptr);
  });
}

void wait_if_interrupted() {
  if (!g_interrupted.load()) return;
  for (;;) ::pause();  // the watcher raises the signal and ends the process
}

std::vector<std::filesystem::path> reclaim_stale_temps(const std::filesystem::path& dir,
                                                       const std::function<bool(const std::string&)>& ours) {
  std::vector<std::filesystem::path> removed;
  std::error_code ec;
  for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const auto [final_name, owner] = temp_owner(it->path().filename().string());
    if (owner == 0 || process_alive(owner) || !ours(final_name)) continue;
    std::error_code rm;
    std::filesystem::remove_all(it->path(), rm);
    if (!rm) removed.push_back(it->path());
  }
  return removed;
}

}  // namespace fusecheck
