// floe_mpi: thin N-API binding over Open MPI. Every MPI call runs on one native thread (MPI_THREAD_FUNNELED);
// JS queues operations and gets Promises that settle in the event loop through a threadsafe function.
#include <dlfcn.h>
#include <sys/prctl.h>
#include <mpi.h>
#include <napi.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

enum class Kind { Init, Send, Recv, Barrier, Allreduce, Split, Abort, Finalize };

struct Op {
  explicit Op(Kind k) : kind(k) {}
  Kind kind;
  int peer = 0, tag = 0, comm = 0;      // peer: dest or source (MPI_ANY_SOURCE = -1 from JS is mapped)
  int color = 0, key = 0;               // Split
  int redOp = 0;                        // Allreduce: 0 sum, 1 min, 2 max
  const void* sendPtr = nullptr;        // Send: bytes kept alive by sendRef
  size_t len = 0;
  std::vector<double> vals;             // Allreduce in/out
  std::vector<char>* recvData = nullptr;  // Recv result (ownership passes to the ArrayBuffer)
  int recvSource = -1, recvTag = -1;
  MPI_Request req = MPI_REQUEST_NULL;
  int result = 0;                       // Split: new comm id; Init: rank
  std::string err;
  std::string message;                  // Abort
  Napi::Promise::Deferred* deferred = nullptr;  // touched on the JS thread only
  Napi::Reference<Napi::Value>* sendRef = nullptr;
};

// never destroyed: at exit the MPI thread may still wait on cv (glibc's pthread_cond_destroy would wait for it)
std::mutex& mu = *new std::mutex;
std::condition_variable& cv = *new std::condition_variable;
std::deque<Op*>& queue = *new std::deque<Op*>;  // new ops, JS thread → MPI thread
std::thread mpiThread;
Napi::ThreadSafeFunction tsfn;
std::atomic<bool> started{false};
int worldRank = -1, worldSize = 0, provided = -1;
int outstanding = 0;          // JS thread only: ops whose Promise is pending (the tsfn is ref'd while > 0)
std::vector<MPI_Comm> comms;  // MPI thread only; 0 = MPI_COMM_WORLD

std::string mpiError(const char* what, int rc) {
  char buf[MPI_MAX_ERROR_STRING];
  int n = 0;
  MPI_Error_string(rc, buf, &n);
  return std::string("MPI ") + what + " failed: " + std::string(buf, n);
}

void complete(Op* op) {
  tsfn.BlockingCall(op, [](Napi::Env env, Napi::Function, Op* op) {
    Napi::HandleScope scope(env);
    try {
    if (!op->err.empty()) {
      op->deferred->Reject(Napi::Error::New(env, op->err).Value());
      delete op->recvData;
    } else {
      switch (op->kind) {
        case Kind::Recv: {
          auto* data = op->recvData;
          Napi::ArrayBuffer ab = data->empty()
              ? Napi::ArrayBuffer::New(env, 0)
              : Napi::ArrayBuffer::New(env, data->data(), data->size(), [](Napi::Env, void*, std::vector<char>* d) { delete d; }, data);
          if (data->empty()) delete data;
          Napi::Object o = Napi::Object::New(env);
          o.Set("data", ab);
          o.Set("source", op->recvSource);
          o.Set("tag", op->recvTag);
          op->deferred->Resolve(o);
          break;
        }
        case Kind::Allreduce: {
          Napi::Float64Array out = Napi::Float64Array::New(env, op->vals.size());
          std::copy(op->vals.begin(), op->vals.end(), out.Data());
          op->deferred->Resolve(out);
          break;
        }
        case Kind::Init: {
          Napi::Object o = Napi::Object::New(env);
          o.Set("rank", worldRank);
          o.Set("size", worldSize);
          o.Set("threadFunneled", provided >= MPI_THREAD_FUNNELED);
          op->deferred->Resolve(o);
          break;
        }
        case Kind::Split: op->deferred->Resolve(Napi::Number::New(env, op->result)); break;
        default: op->deferred->Resolve(env.Undefined());
      }
    }
    } catch (const Napi::Error&) {
      // the environment is going away (a worker ending): nobody waits for this Promise any more
    }
    if (op->sendRef) { op->sendRef->Reset(); delete op->sendRef; }
    delete op->deferred;
    delete op;
    if (--outstanding == 0) tsfn.Unref(env);
  });
}

MPI_Comm commOf(const Op* op) { return op->comm >= 0 && op->comm < int(comms.size()) ? comms[op->comm] : MPI_COMM_NULL; }

// The MPI thread: start new ops, test the ones in flight, match receives by probing; back off while idle.
void loop() {
  // The waits below are a few µs, but Linux stretches a timed sleep by the thread's timer slack (50 µs by default):
  // every poll then slept >= 50 µs and a 1 KB round trip between two ranks cost ~280 µs instead of ~70 µs (bench:
  // bench/pipeline.ts, hop). FLOE_MPI_DEFAULT_SLACK=1 keeps the default, for that comparison.
  const char* keep = std::getenv("FLOE_MPI_DEFAULT_SLACK");
  if (!(keep && std::strcmp(keep, "1") == 0)) prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
  std::vector<Op*> active, recvs;
  bool finalizing = false;
  Op* finalizeOp = nullptr;
  int idle = 0;
  for (;;) {
    std::deque<Op*> fresh;
    {
      std::unique_lock<std::mutex> lk(mu);
      if (queue.empty()) {
        if (active.empty() && recvs.empty()) cv.wait(lk, [] { return !queue.empty(); });
        else if (idle > 64) cv.wait_for(lk, std::chrono::microseconds(std::min(100, 2 * (idle - 64))));  // in-flight ops: poll every ≤ 100 µs
      }
      fresh.swap(queue);
    }
    bool progressed = !fresh.empty();
    for (Op* op : fresh) {
      int rc = MPI_SUCCESS;
      MPI_Comm c = commOf(op);
      if (op->kind != Kind::Init && op->kind != Kind::Abort && op->kind != Kind::Finalize && c == MPI_COMM_NULL) {
        op->err = "MPI: no communicator with id " + std::to_string(op->comm);
        complete(op);
        continue;
      }
      switch (op->kind) {
        case Kind::Init: {
          rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
          if (rc == MPI_SUCCESS) {
            MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
            MPI_Comm_rank(MPI_COMM_WORLD, &worldRank);
            MPI_Comm_size(MPI_COMM_WORLD, &worldSize);
            comms.push_back(MPI_COMM_WORLD);
          } else op->err = mpiError("Init_thread", rc);
          complete(op);
          break;
        }
        case Kind::Send:
          rc = MPI_Isend(op->sendPtr, int(op->len), MPI_BYTE, op->peer, op->tag, c, &op->req);
          if (rc == MPI_SUCCESS) active.push_back(op); else { op->err = mpiError("Isend", rc); complete(op); }
          break;
        case Kind::Recv: recvs.push_back(op); break;
        case Kind::Barrier:
          rc = MPI_Ibarrier(c, &op->req);
          if (rc == MPI_SUCCESS) active.push_back(op); else { op->err = mpiError("Ibarrier", rc); complete(op); }
          break;
        case Kind::Allreduce: {
          MPI_Op mop = op->redOp == 1 ? MPI_MIN : op->redOp == 2 ? MPI_MAX : MPI_SUM;
          rc = MPI_Iallreduce(MPI_IN_PLACE, op->vals.data(), int(op->vals.size()), MPI_DOUBLE, mop, c, &op->req);
          if (rc == MPI_SUCCESS) active.push_back(op); else { op->err = mpiError("Iallreduce", rc); complete(op); }
          break;
        }
        case Kind::Split: {
          MPI_Comm out;
          rc = MPI_Comm_split(c, op->color, op->key, &out);  // collective and blocking: only at set-up
          if (rc == MPI_SUCCESS) {
            MPI_Comm_set_errhandler(out, MPI_ERRORS_RETURN);
            comms.push_back(out);
            op->result = int(comms.size()) - 1;
          } else op->err = mpiError("Comm_split", rc);
          complete(op);
          break;
        }
        case Kind::Abort:
          std::fprintf(stderr, "%s\n", op->message.c_str());
          std::fflush(stderr);
          MPI_Abort(MPI_COMM_WORLD, op->result);
          break;
        case Kind::Finalize: finalizing = true; finalizeOp = op; break;
      }
    }
    for (size_t i = 0; i < active.size();) {
      int flag = 0;
      int rc = MPI_Test(&active[i]->req, &flag, MPI_STATUS_IGNORE);
      if (rc != MPI_SUCCESS || flag) {
        if (rc != MPI_SUCCESS) active[i]->err = mpiError("Test", rc);
        complete(active[i]);
        active.erase(active.begin() + i);
        progressed = true;
      } else i++;
    }
    // receives match in the order they were posted: once one finds nothing, none after it that could take the same
    // message may probe this round (a message arriving between two probes would go to the later receive)
    std::vector<const Op*> unmatched;
    auto overlaps = [](const Op* a, const Op* b) {
      return a->comm == b->comm && (a->peer == b->peer || a->peer == MPI_ANY_SOURCE || b->peer == MPI_ANY_SOURCE) &&
             (a->tag == b->tag || a->tag == MPI_ANY_TAG || b->tag == MPI_ANY_TAG);
    };
    for (size_t i = 0; i < recvs.size();) {
      Op* op = recvs[i];
      if (std::any_of(unmatched.begin(), unmatched.end(), [&](const Op* u) { return overlaps(u, op); })) { i++; continue; }
      int flag = 0;
      MPI_Message msg;
      MPI_Status st;
      int rc = MPI_Improbe(op->peer, op->tag, commOf(op), &flag, &msg, &st);
      if (rc == MPI_SUCCESS && !flag) { unmatched.push_back(op); i++; continue; }
      if (rc == MPI_SUCCESS) {
        int n = 0;
        MPI_Get_count(&st, MPI_BYTE, &n);
        op->recvData = new std::vector<char>(size_t(n));
        rc = MPI_Mrecv(op->recvData->data(), n, MPI_BYTE, &msg, MPI_STATUS_IGNORE);
        op->recvSource = st.MPI_SOURCE;
        op->recvTag = st.MPI_TAG;
      }
      if (rc != MPI_SUCCESS) op->err = mpiError("Mrecv", rc);
      complete(op);
      recvs.erase(recvs.begin() + i);
      progressed = true;
    }
    if (finalizing && active.empty() && recvs.empty()) {
      for (size_t i = 1; i < comms.size(); i++) MPI_Comm_free(&comms[i]);
      int rc = MPI_Finalize();
      if (rc != MPI_SUCCESS) finalizeOp->err = mpiError("Finalize", rc);
      complete(finalizeOp);  // the tsfn is never released: the environment may already be tearing down
      return;
    }
    idle = progressed ? 0 : idle + 1;
  }
}

Napi::Promise enqueue(Napi::Env env, Op* op) {
  if (!started) throw Napi::Error::New(env, "floe_mpi: call init() first");
  op->deferred = new Napi::Promise::Deferred(env);
  Napi::Promise p = op->deferred->Promise();
  if (outstanding++ == 0) tsfn.Ref(env);
  {
    std::lock_guard<std::mutex> lk(mu);
    queue.push_back(op);
  }
  cv.notify_one();
  return p;
}

int intArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), std::string("floe_mpi: ") + what + " must be a number");
  return info[i].As<Napi::Number>().Int32Value();
}

int commArg(const Napi::CallbackInfo& info, size_t i) { return info.Length() > i && info[i].IsNumber() ? info[i].As<Napi::Number>().Int32Value() : 0; }

// init() → Promise<{rank, size, threadFunneled}>: starts the MPI thread, which calls MPI_Init_thread(FUNNELED).
Napi::Value Init(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (started.exchange(true)) throw Napi::Error::New(env, "floe_mpi: init() was already called in this process");
  tsfn = Napi::ThreadSafeFunction::New(env, Napi::Function::New(env, [](const Napi::CallbackInfo&) {}), "floe_mpi", 0, 1);
  tsfn.Unref(env);
  mpiThread = std::thread(loop);
  mpiThread.detach();
  Op* op = new Op(Kind::Init);
  return enqueue(env, op);
}

// isend(dest, tag, bytes: ArrayBufferView, comm?) → Promise<void>; bytes must not change until it settles.
Napi::Value Isend(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Op* op = new Op(Kind::Send);
  op->peer = intArg(info, 0, "dest");
  op->tag = intArg(info, 1, "tag");
  if (info.Length() < 3 || !info[2].IsTypedArray()) { delete op; throw Napi::TypeError::New(env, "floe_mpi isend: bytes must be a typed array"); }
  Napi::TypedArray ta = info[2].As<Napi::TypedArray>();
  op->sendPtr = static_cast<const char*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
  op->len = ta.ByteLength();
  if (op->len > size_t(INT32_MAX)) { delete op; throw Napi::RangeError::New(env, "floe_mpi isend: message over 2 GiB"); }
  op->comm = commArg(info, 3);
  op->sendRef = new Napi::Reference<Napi::Value>(Napi::Persistent(info[2]));
  return enqueue(env, op);
}

// recv(source, tag, comm?) → Promise<{data: ArrayBuffer, source, tag}>; source or tag -1 = any.
Napi::Value Recv(const Napi::CallbackInfo& info) {
  Op* op = new Op(Kind::Recv);
  int src = intArg(info, 0, "source");
  int tag = intArg(info, 1, "tag");
  op->peer = src < 0 ? MPI_ANY_SOURCE : src;
  op->tag = tag < 0 ? MPI_ANY_TAG : tag;
  op->comm = commArg(info, 2);
  return enqueue(info.Env(), op);
}

Napi::Value Barrier(const Napi::CallbackInfo& info) {
  Op* op = new Op(Kind::Barrier);
  op->comm = commArg(info, 0);
  return enqueue(info.Env(), op);
}

// allreduce(values: Float64Array, op: 'sum'|'min'|'max', comm?) → Promise<Float64Array>
Napi::Value Allreduce(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float64_array || !info[1].IsString()) {
    throw Napi::TypeError::New(env, "floe_mpi allreduce: expected (Float64Array, 'sum'|'min'|'max')");
  }
  std::string name = info[1].As<Napi::String>();
  if (name != "sum" && name != "min" && name != "max") throw Napi::TypeError::New(env, "floe_mpi allreduce: op must be sum, min or max, got " + name);
  Op* op = new Op(Kind::Allreduce);
  Napi::Float64Array a = info[0].As<Napi::Float64Array>();
  op->vals.assign(a.Data(), a.Data() + a.ElementLength());
  op->redOp = name == "min" ? 1 : name == "max" ? 2 : 0;
  op->comm = commArg(info, 2);
  return enqueue(env, op);
}

// split(color, key, comm?) → Promise<commId>
Napi::Value Split(const Napi::CallbackInfo& info) {
  Op* op = new Op(Kind::Split);
  op->color = intArg(info, 0, "color");
  op->key = intArg(info, 1, "key");
  op->comm = commArg(info, 2);
  return enqueue(info.Env(), op);
}

// abort(code, message): prints message, then MPI_Abort on the MPI thread (every rank of the job ends).
Napi::Value Abort(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Op* op = new Op(Kind::Abort);
  op->result = intArg(info, 0, "code");
  op->message = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : std::string();
  if (!started) {
    std::fprintf(stderr, "%s\n", op->message.c_str());
    std::exit(op->result);
  }
  return enqueue(env, op);
}

Napi::Value Finalize(const Napi::CallbackInfo& info) { return enqueue(info.Env(), new Op(Kind::Finalize)); }

Napi::Value Version(const Napi::CallbackInfo& info) {
  char buf[MPI_MAX_LIBRARY_VERSION_STRING];
  int n = 0;
  MPI_Get_library_version(buf, &n);  // callable before MPI_Init
  return Napi::String::New(info.Env(), std::string(buf, n));
}

Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  // Node unloads an addon when the worker thread that loaded it ends (the serving engine's worker, at shutdown), but
  // the detached MPI thread may still be leaving loop() then, and Open MPI keeps state in libmpi: unmapping them
  // crashed rank 0 after a clean drain (SIGSEGV in unmapped code). Pin this library (and so libmpi) for the process.
  Dl_info self;
  if (dladdr(reinterpret_cast<void*>(&InitModule), &self) != 0 && self.dli_fname != nullptr) {
    dlopen(self.dli_fname, RTLD_LAZY | RTLD_NOLOAD | RTLD_NODELETE);
  }
  exports.Set("init", Napi::Function::New(env, Init));
  exports.Set("isend", Napi::Function::New(env, Isend));
  exports.Set("recv", Napi::Function::New(env, Recv));
  exports.Set("barrier", Napi::Function::New(env, Barrier));
  exports.Set("allreduce", Napi::Function::New(env, Allreduce));
  exports.Set("split", Napi::Function::New(env, Split));
  exports.Set("abort", Napi::Function::New(env, Abort));
  exports.Set("finalize", Napi::Function::New(env, Finalize));
  exports.Set("version", Napi::Function::New(env, Version));
  return exports;
}

}  // namespace

NODE_API_MODULE(floe_mpi, InitModule)
