// inference_sidecar._native: the client library for Python. inference_sidecar/__init__.py defines the
// exception classes and re-exports what is here; docs/python.md is the user's account.
//
// Every call that waits (connect, infer, wait, run, ping, flush, status, metrics, reload) releases
// the GIL, so threads of one process each with their own Client run in parallel. A Client is not
// thread-safe: a second thread entering one that is in use gets RuntimeError rather than a race.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "convert.hpp"
#include "errors.hpp"
#include "info.hpp"
#include "sidecar/client.hpp"
#include "sidecar/shared/project_version.hpp"

namespace sidecar::python {

namespace {

// Leaked on purpose: the classes live as long as the package, which outlives every call.
PyObject* error_base = nullptr;
std::vector<PyObject*> error_classes;

CacheLookup cache_lookup_of(py::handle cache) {
  if (cache.is_none() || cache.ptr() == Py_False) return CacheLookup::kOff;
  if (cache.ptr() == Py_True) return CacheLookup::kInClient;
  if (py::isinstance<py::str>(cache)) {
    const auto where = cache.cast<std::string>();
    if (where == "client") return CacheLookup::kInClient;
    if (where == "sidecar") return CacheLookup::kInSidecar;
    if (where == "off") return CacheLookup::kOff;
  }
  throw py::value_error("cache must be True, \"client\", \"sidecar\", False or \"off\"");
}

}  // namespace

void register_errors(py::handle base, py::list classes) {
  error_base = base.inc_ref().ptr();
  error_classes.clear();
  for (py::handle cls : classes) error_classes.push_back(cls.inc_ref().ptr());
}

void raise_error(ErrorCode code, const std::string& message) {
  const auto index = static_cast<std::size_t>(code);
  PyObject* cls = index < error_classes.size() ? error_classes[index] : error_base;
  if (cls == nullptr) throw std::runtime_error(std::string(error_code_name(code)) + ": " + message);
  PyErr_SetObject(cls, py::make_tuple(static_cast<int>(code), message).ptr());
  throw py::error_already_set();
}

std::chrono::microseconds to_microseconds(double seconds) {
  if (!(seconds >= 0.0) || seconds > 1e9) throw py::value_error("a timeout is seconds, >= 0");
  return std::chrono::microseconds(std::llround(seconds * 1e6));
}

class PyClient {
 public:
  PyClient(std::string name, double timeout, py::handle cache, py::handle arena_bytes, py::handle spin_us,
           py::handle runtime_dir, bool reconnect)
      : name_(std::move(name)), default_timeout_(to_microseconds(timeout)) {
    ConnectOptions options = connect_options(timeout, runtime_dir);
    options.cache_lookup = cache_lookup_of(cache);
    if (!arena_bytes.is_none()) options.arena_bytes = arena_bytes.cast<std::uint64_t>();
    if (!spin_us.is_none()) options.spin = to_microseconds(spin_us.cast<double>() / 1e6);
    options.reconnect = reconnect;
    Result<Client> connected = [&] {
      py::gil_scoped_release release;
      return Client::connect(name_, options);
    }();
    client_.emplace(take(std::move(connected)));
  }

  // Holds the Client for one call: refuses a closed one, and a second thread.
  class Use {
   public:
    explicit Use(PyClient& owner) : owner_(owner) {
      if (!owner.client_) throw py::value_error("the Client is closed");
      if (owner.busy_.exchange(true, std::memory_order_acquire)) {
        throw std::runtime_error(
            "this Client is in use by another thread: a Client is not thread-safe, give each thread its own");
      }
    }
    ~Use() { owner_.busy_.store(false, std::memory_order_release); }
    Use(const Use&) = delete;
    Use& operator=(const Use&) = delete;
    Client& operator*() { return *owner_.client_; }
    Client* operator->() { return &*owner_.client_; }

   private:
    PyClient& owner_;
  };

  std::chrono::microseconds timeout_of(py::handle timeout) const {
    return timeout.is_none() ? default_timeout_ : to_microseconds(timeout.cast<double>());
  }

  // Converts the arrays into inputs_, which is emptied again when the call returns.
  struct Gathered {
    explicit Gathered(PyClient& owner, const py::args& arrays) : inputs(owner.inputs_) {
      inputs.clear();
      try {
        for (py::handle array : arrays) add_input(array, inputs);
      } catch (...) {
        inputs.clear();
        throw;
      }
      if (inputs.views.empty()) throw py::type_error("no inputs: pass one array per model input");
    }
    ~Gathered() { inputs.clear(); }
    Inputs& inputs;
  };

  py::list infer(const py::args& arrays, py::handle timeout, bool cache, bool as_torch) {
    Use client(*this);
    Gathered gathered(*this, arrays);
    const auto wait = timeout_of(timeout);
    const CachePolicy policy = cache ? CachePolicy::kUse : CachePolicy::kBypass;
    Result<std::vector<Tensor>> result = [&] {
      py::gil_scoped_release release;
      return client->infer(gathered.inputs.views, wait, policy);
    }();
    return to_python(take(std::move(result)), as_torch);
  }

  RequestHandle submit(const py::args& arrays, std::chrono::microseconds timeout, bool cache) {
    Use client(*this);
    Gathered gathered(*this, arrays);
    SubmitOptions options;
    options.timeout = timeout;
    options.cache = cache ? CachePolicy::kUse : CachePolicy::kBypass;
    // Copies the inputs into shared memory and returns: no waiting, the GIL stays.
    return take(client->submit(gathered.inputs.views, options));
  }

  Result<std::vector<Tensor>> wait(RequestHandle handle, std::chrono::microseconds timeout) {
    Use client(*this);
    py::gil_scoped_release release;
    return client->wait(handle, timeout);
  }

  std::optional<Result<std::vector<Tensor>>> try_get(RequestHandle handle) {
    Use client(*this);
    return client->try_get(handle);
  }

  bool cancel(RequestHandle handle) {
    Use client(*this);
    return client->cancel(handle);
  }

  // A request dropped uncollected: cancelled if it has not started; its answer, if any, discarded.
  void abandon(RequestHandle handle) noexcept {
    if (!client_ || busy_.exchange(true, std::memory_order_acquire)) return;
    client_->cancel(handle);
    (void)client_->wait(handle, std::chrono::microseconds(0));
    busy_.store(false, std::memory_order_release);
  }

  py::array input_buffer(py::handle self, py::handle dtype_spec, const std::vector<std::int64_t>& shape) {
    const DType dtype = dtype_from_spec(dtype_spec);
    Use client(*this);
    Result<std::span<std::byte>> buffer = [&] {
      py::gil_scoped_release release;  // the first input of a request may have to reconnect
      return client->input_buffer(dtype, shape);
    }();
    const std::span<std::byte> bytes = take(std::move(buffer));
    return wrap(dtype, shape, bytes.data(), self, true);
  }

  py::list run(py::handle self, py::handle timeout, bool cache) {
    Use client(*this);
    const auto wait = timeout_of(timeout);
    const CachePolicy policy = cache ? CachePolicy::kUse : CachePolicy::kBypass;
    Result<std::span<const TensorView>> result = [&] {
      py::gil_scoped_release release;
      return client->run(wait, policy);
    }();
    const std::span<const TensorView> views = take(std::move(result));
    py::list outputs(views.size());
    for (std::size_t i = 0; i < views.size(); ++i) {
      outputs[i] = wrap(views[i].dtype, views[i].shape, views[i].data, self, false);
    }
    return outputs;
  }

  void reset_inputs() {
    Use client(*this);
    client->reset_inputs();
  }

  void ping(py::handle timeout) {
    Use client(*this);
    const auto wait = timeout_of(timeout);
    Done done = [&] {
      py::gil_scoped_release release;
      return client->ping(wait);
    }();
    check(done);
  }

  std::string flush_cache(py::handle timeout) {
    Use client(*this);
    const auto wait = timeout_of(timeout);
    Result<std::string> result = [&] {
      py::gil_scoped_release release;
      return client->flush_cache(wait);
    }();
    return take(std::move(result));
  }

  py::dict cache_stats() {
    Use client(*this);
    return cache_stats_dict(client->cache_stats());
  }

  py::dict model_info() {
    Use client(*this);
    return model_info_dict(client->model());
  }

  std::string last_cache_outcome() {
    Use client(*this);
    return cache_outcome_name(client->last_cache_outcome());
  }

  std::uint64_t connections() {
    Use client(*this);
    return client->connections();
  }

  void close() {
    if (!client_) return;
    if (busy_.exchange(true, std::memory_order_acquire)) {
      throw std::runtime_error("this Client is in use by another thread and cannot be closed now");
    }
    client_.reset();
    busy_.store(false, std::memory_order_release);
  }

  bool closed() const noexcept { return !client_; }
  const std::string& name() const noexcept { return name_; }
  std::chrono::microseconds default_timeout() const noexcept { return default_timeout_; }

 private:
  std::string name_;
  std::chrono::microseconds default_timeout_;
  std::optional<Client> client_;
  std::atomic<bool> busy_{false};
  Inputs inputs_;  // kept between calls so that its vectors are not reallocated every call
};

// What Client.submit() returns: the request, collected with result().
class Request {
 public:
  Request(py::object owner, RequestHandle handle, std::chrono::microseconds timeout)
      : owner_(std::move(owner)), client_(owner_.cast<PyClient*>()), handle_(handle), timeout_(timeout) {}
  Request(const Request&) = delete;
  Request& operator=(const Request&) = delete;
  ~Request() {
    if (!answer_ && !error_) client_->abandon(handle_);
  }

  py::list result(py::handle timeout, bool as_torch) {
    if (!answer_ && !error_) {
      const auto wait = timeout.is_none() ? timeout_ : to_microseconds(timeout.cast<double>());
      keep(client_->wait(handle_, wait));
    }
    if (error_) raise_error(error_->code, error_->message);
    // Converted on first use and kept, so that result() can be asked again.
    if (!outputs_) {
      for (const Tensor& tensor : *answer_) bfloat16_.push_back(tensor.dtype == DType::kBFloat16);
      outputs_ = to_python(std::move(*answer_), false);
    }
    return as_torch ? to_torch(*outputs_) : *outputs_;
  }

  bool done() {
    if (answer_ || error_) return true;
    std::optional<Result<std::vector<Tensor>>> answered = client_->try_get(handle_);
    if (!answered) return false;
    keep(std::move(*answered));
    return true;
  }

  bool cancel() { return !answer_ && !error_ && client_->cancel(handle_); }

 private:
  void keep(Result<std::vector<Tensor>>&& result) {
    if (result.ok()) answer_ = std::move(result).value();
    else error_ = result.error();
  }

  py::list to_torch(const py::list& arrays) const {
    py::module_ torch = py::module_::import("torch");
    py::list tensors;
    for (std::size_t i = 0; i < arrays.size(); ++i) {
      py::object tensor = torch.attr("from_numpy")(arrays[i]);
      if (bfloat16_[i]) tensor = tensor.attr("view")(torch.attr("bfloat16"));
      tensors.append(tensor);
    }
    return tensors;
  }

  py::object owner_;  // the Python Client, kept alive as long as a request of it may be collected
  PyClient* client_;
  RequestHandle handle_;
  std::chrono::microseconds timeout_;
  std::optional<std::vector<Tensor>> answer_;
  std::optional<Error> error_;
  std::optional<py::list> outputs_;
  std::vector<bool> bfloat16_;
};

}  // namespace sidecar::python

PYBIND11_MODULE(_native, module) {
  using namespace sidecar;
  using namespace sidecar::python;
  init_dtypes();
  module.attr("__version__") = kProjectVersion;
  module.def("_register_errors", &register_errors);
  module.def("error_code_names", [] {
    py::list names;
    for (int code = 0;; ++code) {
      const std::string name = error_code_name(static_cast<ErrorCode>(code));
      if (name == "unknown") break;
      names.append(name);
    }
    return names;
  });
  define_operations(module);

  py::class_<Request>(module, "Request", "A request sent by Client.submit(); result() collects its outputs.")
      .def("result", &Request::result, py::arg("timeout") = py::none(), py::arg("as_torch") = false,
           "The outputs (a list), waiting at most TIMEOUT seconds (None: the timeout given to submit). Raises what "
           "infer() would; a result() that times out abandons the request.")
      .def("done", &Request::done, "True once answered (never blocks).")
      .def("cancel", &Request::cancel, "Keeps the request from running if it has not started; True if it did.");

  py::class_<PyClient>(module, "Client")
      .def(py::init<std::string, double, py::handle, py::handle, py::handle, py::handle, bool>(), py::arg("name"),
           py::kw_only(), py::arg("timeout") = 5.0, py::arg("cache") = true, py::arg("arena_bytes") = py::none(),
           py::arg("spin_us") = py::none(), py::arg("runtime_dir") = py::none(), py::arg("reconnect") = true)
      .def("infer", &PyClient::infer, py::arg("timeout") = py::none(), py::arg("cache") = true,
           py::arg("as_torch") = false)
      .def(
          "submit",
          [](py::object self, const py::args& arrays, py::handle timeout, bool cache) {
            PyClient& client = self.cast<PyClient&>();
            const auto wait = client.timeout_of(timeout);
            const RequestHandle handle = client.submit(arrays, wait, cache);
            return std::make_unique<Request>(std::move(self), handle, wait);
          },
          py::arg("timeout") = py::none(), py::arg("cache") = true)
      .def(
          "input_buffer",
          [](py::object self, py::handle dtype, const std::vector<std::int64_t>& shape) {
            return self.cast<PyClient&>().input_buffer(self, dtype, shape);
          },
          py::arg("dtype"), py::arg("shape"))
      .def(
          "run", [](py::object self, py::handle timeout, bool cache) { return self.cast<PyClient&>().run(self, timeout, cache); },
          py::kw_only(), py::arg("timeout") = py::none(), py::arg("cache") = true)
      .def("reset_inputs", &PyClient::reset_inputs)
      .def("ping", &PyClient::ping, py::arg("timeout") = py::none())
      .def("flush_cache", &PyClient::flush_cache, py::arg("timeout") = py::none())
      .def("cache_stats", &PyClient::cache_stats)
      .def_property_readonly("model_info", &PyClient::model_info)
      .def_property_readonly("last_cache_outcome", &PyClient::last_cache_outcome)
      .def_property_readonly("connections", &PyClient::connections)
      .def_property_readonly("name", &PyClient::name)
      .def_property_readonly("closed", &PyClient::closed)
      .def_property_readonly("timeout",
                             [](const PyClient& client) { return client.default_timeout().count() / 1e6; })
      .def("close", &PyClient::close)
      .def("__enter__", [](py::object self) { return self; })
      .def("__exit__", [](PyClient& client, py::args) { client.close(); })
      .def("__repr__", [](const PyClient& client) {
        return "<inference_sidecar.Client '" + client.name() + "'" + (client.closed() ? " closed>" : ">");
      });
}
