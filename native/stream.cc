// Weight streaming: one reader thread that preads file ranges into staging buffers ahead of compute. Reads go
// through O_DIRECT where the file system takes it (aligned pread into a bounce buffer, then a copy into the staging
// buffer: the copy runs at memory speed, far above the disk's), so streaming a model larger than memory neither
// fills the page cache nor evicts what the resident layers need. Where O_DIRECT is refused (tmpfs, some network file
// systems) or FLOE_STREAM_DIRECT=0, buffered reads drop their pages afterwards (posix_fadvise DONTNEED). The scalar
// twin is src/model/offload.ts's SyncReader (readSync in the caller's thread).
//
// streamOpen(path) -> fd; streamRead(fd, dst, fileOffset, chunkBytes) -> ticket; streamWait(ticket); streamClose(fd).
// Reads complete in submission order; a failed read's error is thrown by streamWait of its ticket.

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "dispatch.h"
#include "napi_args.h"
#include "stream.h"

namespace floe {
namespace {

using napi_args::fail;
using napi_args::integer;
using napi_args::need_args;
using napi_args::u8;

// O_DIRECT needs the file offset, length and buffer aligned to the device's logical block; 4096 covers every
// block size Linux file systems use.
constexpr int64_t kDirectAlign = 4096;

struct Job {
  int64_t ticket;
  napi_env env;  // whose staging buffer dst is: its teardown cancels the job (see drain)
  int fd;
  uint8_t* dst;
  int64_t len;
  int64_t offset;
  int64_t chunk;
};

struct Reader {
  std::mutex mu;
  std::condition_variable wake, done;
  std::deque<Job> queue;
  int64_t next_ticket = 1;
  int64_t completed = 0;  // every ticket <= completed has finished
  std::map<int64_t, std::string> errors;
  std::thread thread;
  uint8_t* bounce = nullptr;  // aligned buffer for O_DIRECT reads (reader thread only)
  int64_t bounce_len = 0;
  // fd → its O_DIRECT twin, opened by streamOpen where the file system allows it. Kept here, in the never-destroyed
  // Reader, not in statics: a read still in flight at process exit must not touch a destroyed mutex.
  std::mutex direct_mu;
  std::map<int, int> direct_fds;
  std::atomic<int64_t> direct_reads{0};  // reads done through O_DIRECT, moved into the counters by streamWait
  std::atomic<bool> abort_current{false};  // set by drain: stop the running job between chunks

  // An environment going away (process exit, a worker thread ending) frees its staging buffers without waiting for
  // reads in flight: drop its queued jobs and stop the running one before that happens.
  void drain(napi_env env) {
    std::unique_lock<std::mutex> lk(mu);
    for (auto it = queue.begin(); it != queue.end();) {
      if (it != queue.begin() && it->env == env) it = queue.erase(it); else ++it;
    }
    if (queue.empty() || queue.front().env != env) return;
    abort_current = true;
    int64_t t = queue.front().ticket;
    done.wait(lk, [&] { return completed >= t; });
    abort_current = false;
  }

  int direct_fd(int fd) {
    std::lock_guard<std::mutex> lk(direct_mu);
    auto it = direct_fds.find(fd);
    return it == direct_fds.end() ? -1 : it->second;
  }

  void disable_direct(int fd) {
    std::lock_guard<std::mutex> lk(direct_mu);
    auto it = direct_fds.find(fd);
    if (it == direct_fds.end()) return;
    ::close(it->second);
    direct_fds.erase(it);
  }

  // Reads [offset, offset + len) of the file through its O_DIRECT descriptor into dst. Returns false (nothing
  // wrong with the file) when the file system refuses an O_DIRECT read, so the caller falls back to buffered reads.
  bool read_direct(const Job& j, int dfd, int64_t& at, std::string& err) {
    while (at < j.len && !abort_current) {
      int64_t want = std::min(j.chunk, j.len - at);
      int64_t pos = j.offset + at;
      int64_t start = pos & ~(kDirectAlign - 1);
      int64_t skip = pos - start;
      int64_t span = (skip + want + kDirectAlign - 1) & ~(kDirectAlign - 1);
      if (span > bounce_len) {
        std::free(bounce);
        bounce = nullptr;
        bounce_len = 0;
        void* p = nullptr;
        if (::posix_memalign(&p, size_t(kDirectAlign), size_t(span)) != 0) return false;
        bounce = static_cast<uint8_t*>(p);
        bounce_len = span;
      }
      ssize_t got = ::pread(dfd, bounce, size_t(span), off_t(start));
      if (got < 0 && errno == EINTR) continue;
      if (got < 0 && errno == EINVAL) return false;
      if (got <= skip) {
        err = got < 0 ? std::string(std::strerror(errno)) : std::string("unexpected end of file");
        err += " reading " + std::to_string(want) + " bytes at offset " + std::to_string(pos);
        return true;
      }
      int64_t use = std::min(int64_t(got) - skip, want);
      std::memcpy(j.dst + at, bounce + skip, size_t(use));
      at += use;
    }
    return true;
  }

  void run() {
    for (;;) {
      Job j;
      {
        std::unique_lock<std::mutex> lk(mu);
        wake.wait(lk, [&] { return !queue.empty(); });
        j = queue.front();
      }
      std::string err;
      int64_t at = 0;
      if (int dfd = direct_fd(j.fd); dfd >= 0) {
        if (read_direct(j, dfd, at, err)) direct_reads.fetch_add(1);
        else disable_direct(j.fd);  // refused: this read and later ones go through the page cache
      }
      while (at < j.len && err.empty() && !abort_current) {
        int64_t want = std::min(j.chunk, j.len - at);
        ssize_t got = ::pread(j.fd, j.dst + at, size_t(want), off_t(j.offset + at));
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) {
          err = got < 0 ? std::string(std::strerror(errno)) : std::string("unexpected end of file");
          err += " reading " + std::to_string(want) + " bytes at offset " + std::to_string(j.offset + at);
          break;
        }
        // these pages are in the staging buffer now; the cached copy would only crowd out the resident layers
#ifdef POSIX_FADV_DONTNEED  // not on macOS: there the page cache keeps what was read
        ::posix_fadvise(j.fd, off_t(j.offset + at), off_t(got), POSIX_FADV_DONTNEED);
#endif
        at += got;
      }
      {
        std::lock_guard<std::mutex> lk(mu);
        queue.pop_front();
        if (!err.empty()) errors[j.ticket] = err;
        completed = j.ticket;
      }
      done.notify_all();
    }
  }
};

// The destination buffers of reads in flight, kept alive until a streamWait on their own thread (env) sees them done:
// a staging buffer collected mid-read would be written after free.
std::mutex pins_mu;
std::map<int64_t, std::pair<napi_env, Napi::ObjectReference*>> pins;

void unpin_done(napi_env env, int64_t completed) {
  std::lock_guard<std::mutex> lk(pins_mu);
  for (auto it = pins.begin(); it != pins.end() && it->first <= completed;) {
    if (it->second.first == env) { delete it->second.second; it = pins.erase(it); } else ++it;
  }
}

std::atomic<Reader*> g_reader{nullptr};  // set once the reader thread exists

Reader* reader() {
  static Reader* r = [] {
    auto* x = new Reader();
    x->thread = std::thread([x] { x->run(); });
    x->thread.detach();  // lives as long as the process
    g_reader = x;
    return x;
  }();
  return r;
}

Napi::Value StreamOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) napi_args::type_fail(env, "streamOpen", "path must be a string");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(env, "streamOpen", "open '" + path + "' failed: " + std::strerror(errno));
#ifdef POSIX_FADV_SEQUENTIAL
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
#endif
#ifdef O_DIRECT
  const char* flag = std::getenv("FLOE_STREAM_DIRECT");
  if (!(flag && std::strcmp(flag, "0") == 0)) {
    int dfd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
    if (dfd >= 0) {
      Reader* r = reader();
      std::lock_guard<std::mutex> lk(r->direct_mu);
      r->direct_fds[fd] = dfd;
    }
  }
#endif
  return Napi::Number::New(env, fd);
}

Napi::Value StreamRead(const Napi::CallbackInfo& info) {
  const char* op = "streamRead";
  need_args(info, op, 4);
  int fd = int(integer(info, 0, op, "fd"));
  auto dst = u8(info, 1, op, "dst");
  int64_t offset = integer(info, 2, op, "fileOffset");
  int64_t chunk = integer(info, 3, op, "chunkBytes", 1);
  count("stream", "read", "native");
  Reader* r = reader();
  auto* pin = new Napi::ObjectReference(Napi::Persistent(info[1].As<Napi::Object>()));
  int64_t t;
  {
    std::lock_guard<std::mutex> lk(r->mu);
    t = r->next_ticket++;
    {
      std::lock_guard<std::mutex> pk(pins_mu);
      pins[t] = {info.Env(), pin};
    }
    r->queue.push_back({t, info.Env(), fd, dst.p, dst.n, offset, chunk});
  }
  r->wake.notify_one();
  return Napi::Number::New(info.Env(), double(t));
}

Napi::Value StreamWait(const Napi::CallbackInfo& info) {
  const char* op = "streamWait";
  need_args(info, op, 1);
  int64_t t = integer(info, 0, op, "ticket", 1);
  Reader* r = reader();
  std::string err;
  int64_t completed;
  {
    std::unique_lock<std::mutex> lk(r->mu);
    if (t >= r->next_ticket) fail(info.Env(), op, "ticket " + std::to_string(t) + " was never issued");
    r->done.wait(lk, [&] { return r->completed >= t; });
    completed = r->completed;
    auto it = r->errors.find(t);
    if (it != r->errors.end()) { err = it->second; r->errors.erase(it); }
  }
  unpin_done(info.Env(), completed);
  for (int64_t n = r->direct_reads.exchange(0); n > 0; n--) count("stream", "direct", "native");
  if (!err.empty()) fail(info.Env(), op, err);
  return info.Env().Undefined();
}

Napi::Value StreamClose(const Napi::CallbackInfo& info) {
  int fd = int(integer(info, 0, "streamClose", "fd"));
  reader()->disable_direct(fd);
  ::close(fd);
  return info.Env().Undefined();
}

}  // namespace

void register_stream(Napi::Env env, Napi::Object exports) {
  napi_add_env_cleanup_hook(
      env, [](void* e) { if (Reader* r = g_reader.load()) r->drain(static_cast<napi_env>(e)); }, static_cast<napi_env>(env));
  exports.Set("streamOpen", Napi::Function::New(env, StreamOpen));
  exports.Set("streamRead", Napi::Function::New(env, StreamRead));
  exports.Set("streamWait", Napi::Function::New(env, StreamWait));
  exports.Set("streamClose", Napi::Function::New(env, StreamClose));
}

}  // namespace floe
