// Weight streaming: one reader thread that preads file ranges into staging buffers ahead of compute and drops the
// pages it read from the page cache (posix_fadvise DONTNEED), so streaming a model larger than memory does not fill
// the cache. The scalar twin is src/model/offload.ts's SyncReader (readSync in the caller's thread).
//
// streamOpen(path) -> fd; streamRead(fd, dst, fileOffset, chunkBytes) -> ticket; streamWait(ticket); streamClose(fd).
// Reads complete in submission order; a failed read's error is thrown by streamWait of its ticket.

#include <fcntl.h>
#include <unistd.h>

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

struct Job {
  int64_t ticket;
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

  void run() {
    for (;;) {
      Job j;
      {
        std::unique_lock<std::mutex> lk(mu);
        wake.wait(lk, [&] { return !queue.empty(); });
        j = queue.front();
      }
      std::string err;
      for (int64_t at = 0; at < j.len && err.empty();) {
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

Reader* reader() {
  static Reader* r = [] {
    auto* x = new Reader();
    x->thread = std::thread([x] { x->run(); });
    x->thread.detach();  // lives as long as the process
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
    r->queue.push_back({t, fd, dst.p, dst.n, offset, chunk});
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
  if (!err.empty()) fail(info.Env(), op, err);
  return info.Env().Undefined();
}

Napi::Value StreamClose(const Napi::CallbackInfo& info) {
  ::close(int(integer(info, 0, "streamClose", "fd")));
  return info.Env().Undefined();
}

}  // namespace

void register_stream(Napi::Env env, Napi::Object exports) {
  exports.Set("streamOpen", Napi::Function::New(env, StreamOpen));
  exports.Set("streamRead", Napi::Function::New(env, StreamRead));
  exports.Set("streamWait", Napi::Function::New(env, StreamWait));
  exports.Set("streamClose", Napi::Function::New(env, StreamClose));
}

}  // namespace floe
