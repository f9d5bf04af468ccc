#include "convert.hpp"

#include <array>
#include <cstring>
#include <string>

namespace sidecar::python {
namespace {

using detail_api = py::detail::npy_api;

// The shape of a NumPy array is read in place as the tensor's shape.
static_assert(sizeof(Py_intptr_t) == sizeof(std::int64_t));

constexpr std::size_t kDTypeSlots = 16;
// Indexed by the DType's value. Created at import and never freed: they must outlive every array.
std::array<PyObject*, kDTypeSlots> numpy_dtypes{};

bool native_byte_order(char byteorder) {
  const std::uint16_t probe = 1;
  char first = 0;
  std::memcpy(&first, &probe, 1);
  const char native_explicit = first ? '<' : '>';
  return byteorder == '=' || byteorder == '|' || byteorder == native_explicit;
}

// The protocol's dtype of a NumPy dtype, by kind and size: numpy.int64 and numpy.longlong are
// distinct dtypes of the same bytes.
bool dtype_of_descr(PyObject* descr, DType& dtype) {
  const auto* proxy = py::detail::array_descriptor_proxy(descr);
  switch (proxy->kind) {
    case 'f':
      if (proxy->elsize == 4) return dtype = DType::kFloat32, true;
      if (proxy->elsize == 8) return dtype = DType::kFloat64, true;
      if (proxy->elsize == 2) return dtype = DType::kFloat16, true;
      return false;
    case 'i':
      if (proxy->elsize == 8) return dtype = DType::kInt64, true;
      if (proxy->elsize == 4) return dtype = DType::kInt32, true;
      if (proxy->elsize == 2) return dtype = DType::kInt16, true;
      if (proxy->elsize == 1) return dtype = DType::kInt8, true;
      return false;
    case 'u':
      if (proxy->elsize == 1) return dtype = DType::kUInt8, true;
      return false;
    case 'b': return dtype = DType::kBool, true;
    default: return false;
  }
}

[[noreturn]] void unsupported(py::handle descr) {
  throw py::type_error("dtype " + py::str(descr).cast<std::string>() +
                       " has no sidecar equivalent (float16/32/64, int8/16/32/64, uint8, bool, bfloat16 from torch)");
}

// A torch.Tensor, recognised without importing torch: a class named Tensor in module torch in the
// value's type hierarchy (so that subclasses such as nn.Parameter count).
bool is_torch_tensor(py::handle value) {
  PyObject* mro = Py_TYPE(value.ptr())->tp_mro;
  if (mro == nullptr) return false;
  for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(mro); ++i) {
    auto* type = reinterpret_cast<PyTypeObject*>(PyTuple_GET_ITEM(mro, i));
    if (std::strcmp(type->tp_name, "Tensor") != 0 && std::strcmp(type->tp_name, "torch.Tensor") != 0) continue;
    py::object module = py::reinterpret_borrow<py::object>(reinterpret_cast<PyObject*>(type)).attr("__module__");
    if (py::isinstance<py::str>(module) && module.cast<std::string>() == "torch") return true;
  }
  return false;
}

py::module_& torch_module() {
  // Leaked: torch outlives this module anyway, and finalizers must not run after the interpreter's.
  static auto* torch = new py::module_(py::module_::import("torch"));
  return *torch;
}

}  // namespace

void init_dtypes() {
  for (std::uint8_t raw = 1; raw <= 10; ++raw) {
    const auto dtype = static_cast<DType>(raw);
    const std::string name = dtype == DType::kBFloat16 ? "int16" : std::string(dtype_name(dtype));
    numpy_dtypes[raw] = py::dtype(name).release().ptr();
  }
}

void add_input(py::handle value, Inputs& inputs) {
  auto& api = detail_api::get();
  py::object array;
  bool bfloat16 = false;
  if (api.PyArray_Check_(value.ptr())) {
    array = py::reinterpret_borrow<py::object>(value);
  } else if (is_torch_tensor(value)) {
    py::object tensor = value.attr("detach")().attr("cpu")();
    py::module_& torch = torch_module();
    // NumPy has no bfloat16: its bits travel as int16 and are labelled bfloat16.
    if (tensor.attr("dtype").is(torch.attr("bfloat16"))) {
      tensor = tensor.attr("contiguous")().attr("view")(torch.attr("int16"));
      bfloat16 = true;
    }
    array = tensor.attr("numpy")();
  } else {
    PyObject* converted = api.PyArray_FromAny_(value.ptr(), nullptr, 0, 0, detail_api::NPY_ARRAY_ENSUREARRAY_, nullptr);
    if (converted == nullptr) throw py::error_already_set();
    array = py::reinterpret_steal<py::object>(converted);
  }
  const auto* proxy = py::detail::array_proxy(array.ptr());
  DType dtype{};
  if (!dtype_of_descr(proxy->descr, dtype)) unsupported(proxy->descr);
  if (bfloat16) dtype = DType::kBFloat16;
  constexpr int kLaidOut = detail_api::NPY_ARRAY_C_CONTIGUOUS_ | detail_api::NPY_ARRAY_ALIGNED_;
  const char byteorder = py::detail::array_descriptor_proxy(proxy->descr)->byteorder;
  if ((proxy->flags & kLaidOut) != kLaidOut || !native_byte_order(byteorder)) {
    // A view with strides, a Fortran-ordered or byte-swapped array: its elements, copied in
    // row-major order and native byte order.
    PyObject* descr = numpy_dtypes[static_cast<std::uint8_t>(dtype)];
    Py_INCREF(descr);  // PyArray_FromAny steals it
    PyObject* copy = api.PyArray_FromAny_(array.ptr(), descr, 0, 0,
                                          kLaidOut | detail_api::NPY_ARRAY_ENSUREARRAY_ | detail_api::NPY_ARRAY_FORCECAST_,
                                          nullptr);
    if (copy == nullptr) throw py::error_already_set();
    array = py::reinterpret_steal<py::object>(copy);
    proxy = py::detail::array_proxy(array.ptr());
  }
  const auto* descr = py::detail::array_descriptor_proxy(proxy->descr);
  std::size_t bytes = static_cast<std::size_t>(descr->elsize);
  for (int i = 0; i < proxy->nd; ++i) bytes *= static_cast<std::size_t>(proxy->dimensions[i]);
  TensorView view;
  view.dtype = dtype;
  view.shape = std::span<const std::int64_t>(reinterpret_cast<const std::int64_t*>(proxy->dimensions),
                                             static_cast<std::size_t>(proxy->nd));
  view.data = proxy->data;
  view.bytes = bytes;
  inputs.views.push_back(view);
  inputs.keep.push_back(std::move(array));
}

DType dtype_from_spec(py::handle spec) {
  if (py::isinstance<py::str>(spec) && spec.cast<std::string>() == "bfloat16") return DType::kBFloat16;
  py::dtype descr = py::dtype::from_args(py::reinterpret_borrow<py::object>(spec));
  DType dtype{};
  if (!dtype_of_descr(descr.ptr(), dtype)) unsupported(descr);
  return dtype;
}

py::array wrap(DType dtype, std::span<const std::int64_t> shape, const void* data, py::handle base, bool writeable) {
  auto& api = detail_api::get();
  PyObject* descr = numpy_dtypes[static_cast<std::uint8_t>(dtype)];
  if (descr == nullptr) throw py::type_error("the sidecar sent an unknown dtype");
  Py_INCREF(descr);  // PyArray_NewFromDescr steals it
  // Without strides NumPy lays the array out in row-major order, as the sidecar wrote it.
  PyObject* array = api.PyArray_NewFromDescr_(
      api.PyArray_Type_, descr, static_cast<int>(shape.size()),
      reinterpret_cast<Py_intptr_t*>(const_cast<std::int64_t*>(shape.data())), nullptr, const_cast<void*>(data),
      writeable ? detail_api::NPY_ARRAY_WRITEABLE_ : 0, nullptr);
  if (array == nullptr) throw py::error_already_set();
  auto result = py::reinterpret_steal<py::array>(array);
  // No bytes (an empty tensor): NumPy allocated the array's own, and it needs no base.
  if (data != nullptr && api.PyArray_SetBaseObject_(array, base.inc_ref().ptr()) < 0) throw py::error_already_set();
  return result;
}

py::list to_python(std::vector<Tensor>&& tensors, bool as_torch) {
  // One owner for all the outputs' bytes; each array keeps it alive.
  auto* owned = new std::vector<Tensor>(std::move(tensors));
  py::capsule base(owned, [](void* pointer) { delete static_cast<std::vector<Tensor>*>(pointer); });
  py::list outputs(owned->size());
  for (std::size_t i = 0; i < owned->size(); ++i) {
    const Tensor& tensor = (*owned)[i];
    py::array array = wrap(tensor.dtype, tensor.shape, tensor.data.data(), base, true);
    if (as_torch) {
      py::module_& torch = torch_module();
      py::object converted = torch.attr("from_numpy")(array);
      if (tensor.dtype == DType::kBFloat16) converted = converted.attr("view")(torch.attr("bfloat16"));
      outputs[i] = std::move(converted);
    } else {
      outputs[i] = std::move(array);
    }
  }
  return outputs;
}

}  // namespace sidecar::python
