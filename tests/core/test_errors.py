"""Bad input raises a ValueError / TypeError / RuntimeError / IndexError whose message
names the op and the shapes involved, so a user can find the mistake without a debugger."""
import numpy as np
import pytest

import minigrad as mg

F = mg.functional
A, B = mg.zeros(2, 3), mg.zeros(4, 5)
NEEDS_GRAD = mg.zeros(2, requires_grad=True)


CASES = {  # name: (bad call, exception, regex its message must match)
    # shapes
    "matmul": (lambda: A @ B, ValueError, r"matmul: shapes \(2, 3\) and \(4, 5\) are not aligned"),
    "matmul_vector": (lambda: mg.zeros(3) @ mg.zeros(4), ValueError, r"matmul: shapes \(3,\) and \(4,\)"),
    "matmul_batch": (lambda: mg.zeros(2, 2, 3) @ mg.zeros(3, 3, 4), ValueError, r"matmul: .*\(2, 2, 3\) and \(3, 3, 4\)"),
    "matmul_0d": (lambda: mg.matmul(mg.tensor(1.0), mg.zeros(2)), ValueError, r"matmul: .*shapes \(\) and \(2,\)"),
    "add": (lambda: A + mg.zeros(4), ValueError, r"add: shapes \(2, 3\) and \(4,\) cannot be broadcast"),
    "mul_reflected": (lambda: np.zeros(2) * A, ValueError, r"mul: shapes \(2,\) and \(2, 3\) cannot be broadcast"),
    "maximum": (lambda: mg.maximum(A, B), ValueError, r"maximum: shapes \(2, 3\) and \(4, 5\)"),
    "where": (lambda: mg.where(np.ones(2, bool), mg.zeros(3), 0.0), ValueError, r"where: condition \(2,\), x \(3,\)"),
    "concatenate": (lambda: mg.concatenate([A, mg.zeros(3, 4)]), ValueError,
                    r"concatenate: shapes \[\(2, 3\), \(3, 4\)\] must match in every dimension except axis 0"),
    "concatenate_ndim": (lambda: mg.concatenate([A, mg.zeros(3)], 0), ValueError, r"concatenate: .*\[\(2, 3\), \(3,\)\]"),
    "concatenate_empty": (lambda: mg.concatenate([]), ValueError, r"concatenate: need at least one tensor"),
    "stack": (lambda: mg.stack([A, mg.zeros(3, 2)]), ValueError, r"stack: .*same shape.*\[\(2, 3\), \(3, 2\)\]"),
    "reshape": (lambda: A.reshape(4), ValueError, r"reshape: cannot reshape a tensor of shape \(2, 3\) .*into shape \(4,\)"),
    "broadcast_to": (lambda: A.broadcast_to((3, 3)), ValueError, r"broadcast_to: .*shape \(2, 3\) to shape \(3, 3\)"),
    "squeeze": (lambda: A.squeeze(0), ValueError, r"squeeze: axis 0 of shape \(2, 3\) has size 2"),
    "transpose": (lambda: A.transpose(0, 0), ValueError, r"transpose: axes \(0, 0\) are not a permutation .*\(2, 3\)"),
    "split_sections": (lambda: mg.split(mg.zeros(5), [2, 2]), ValueError, r"split: sections \[2, 2\] sum to 4.*length 5"),
    "split_size": (lambda: mg.split(mg.zeros(5), 0), ValueError, r"split: split size must be positive"),
    "chunk": (lambda: mg.chunk(mg.zeros(5), 0), ValueError, r"chunk: number of chunks must be positive"),
    "max_empty": (lambda: mg.zeros(0, 3).max(axis=0), ValueError, r"max: .*input shape \(0, 3\)"),
    "mse_loss": (lambda: F.mse_loss(A, mg.zeros(3, 2)), ValueError, r"mse_loss: input shape \(2, 3\) and target shape \(3, 2\)"),
    "cross_entropy_shape": (lambda: F.cross_entropy(A, [0, 1, 2]), ValueError,
                            r"cross_entropy: logits of shape \(2, 3\) need a target of shape \(2,\).*got target shape \(3,\)"),
    "cross_entropy_class": (lambda: F.cross_entropy(A, [0, 3]), ValueError, r"cross_entropy: target 3 is out of range for 3 classes"),
    "cross_entropy_dtype": (lambda: F.cross_entropy(A, [0.0, 1.0]), ValueError, r"cross_entropy: .*integer"),
    "cross_entropy_reduction": (lambda: F.cross_entropy(A, [0, 1], reduction="avg"), ValueError, r"cross_entropy: reduction"),
    "embedding": (lambda: F.embedding(mg.zeros(4, 2), [4]), ValueError, r"embedding: index 4 is out of range .*\(4, 2\)"),
    "dropout": (lambda: F.dropout(A, 1.5), ValueError, r"dropout: p should be a number in range \[0, 1\] .*; got 1.5"),
    "backward_grad_shape": (lambda: (NEEDS_GRAD * 2).backward(np.ones(3)), ValueError,
                            r"backward: grad for output 0 has shape \(3,\), expected \(2,\)"),
    "data_setter": (lambda: setattr(mg.zeros(2), "data", np.zeros(3)), ValueError, r"data: new data has shape \(3,\), expected \(2,\)"),
    "item": (lambda: A.item(), ValueError, r"item: .*one element.*\(2, 3\)"),
    # axes
    "sum_axis": (lambda: A.sum(axis=2), ValueError, r"sum: axis 2 is out of range .*2 dimensions"),
    "max_axis": (lambda: A.max(axis=-3), ValueError, r"max: axis -3 is out of range"),
    "repeated_axis": (lambda: A.sum(axis=(0, 0)), ValueError, r"sum: repeated axis"),
    "swapaxes": (lambda: A.swapaxes(0, 2), ValueError, r"swapaxes: axis 2 is out of range"),
    "expand_dims": (lambda: A.expand_dims(4), ValueError, r"expand_dims: axis 4 is out of range .*\(2, 3\)"),
    "flip_axis": (lambda: mg.zeros(2).flip(1), ValueError, r"flip: axis 1 is out of range"),
    "concatenate_axis": (lambda: mg.concatenate([A, A], axis=2), ValueError, r"concatenate: axis 2 is out of range"),
    "split_axis": (lambda: mg.split(mg.zeros(5), 2, axis=1), ValueError, r"split: axis 1 is out of range"),
    "mean_axis": (lambda: A.mean(axis=2), ValueError, r"mean: axis 2 is out of range"),
    "var_axis": (lambda: A.var(axis=2), ValueError, r"var: axis 2 is out of range"),
    "softmax_axis": (lambda: F.softmax(A, axis=2), ValueError, r"softmax: axis 2 is out of range"),
    "logsumexp_axis": (lambda: F.logsumexp(A, axis=5), ValueError, r"logsumexp: axis 5 is out of range"),
    # indexing
    "getitem_bounds": (lambda: mg.zeros(3)[5], IndexError, r"getitem: .*shape \(3,\).*index 5 is out of bounds"),
    "getitem_array": (lambda: mg.zeros(3)[[0, 7]], IndexError, r"getitem: .*shape \(3,\).*index 7"),
    "getitem_too_many": (lambda: mg.zeros(3)[0, 1], IndexError, r"getitem: .*shape \(3,\).*too many indices"),
    "getitem_float": (lambda: mg.zeros(3)[1.5], IndexError, r"getitem: invalid index for a tensor of shape \(3,\)"),
    # types
    "string_data": (lambda: mg.Tensor("abc"), TypeError, r"Tensor: data must be numeric.*<U3"),
    "object_data": (lambda: mg.Tensor(object()), TypeError, r"Tensor: data must be numeric.*object"),
    "ragged_data": (lambda: mg.Tensor([[1.0, 2.0], [3.0]]), TypeError, r"Tensor: cannot make a numeric array from list"),
    "none_data": (lambda: mg.Tensor(None), TypeError, r"Tensor: data must be numeric"),
    "string_operand": (lambda: A + "a", TypeError, r"add: .*str"),
    "int_requires_grad": (lambda: mg.Tensor([1, 2], requires_grad=True), TypeError,
                          r"Tensor: only floating-point tensors can require grad; this one has dtype int64"),
    "bool_requires_grad_": (lambda: mg.tensor([True]).requires_grad_(), TypeError, r"requires_grad_: .*dtype bool"),
    "len_0d": (lambda: len(mg.tensor(1.0)), TypeError, r"len\(\) of a 0-d tensor"),
    "rng": (lambda: mg.randn(2, rng=0), TypeError, r"rng must be a numpy.random.Generator.*got int"),
    # autograd
    "backward_no_grad": (lambda: A.sum().backward(), RuntimeError, r"backward: output 0 \(shape \(\)\) does not require grad"),
    "backward_non_scalar": (lambda: (NEEDS_GRAD * 2).backward(), ValueError, r"backward: output 0 has shape \(2,\)"),
    "grad_of_integer_tensor": (lambda: mg.grad((NEEDS_GRAD * 2).sum(), [mg.Tensor([1, 2])]), RuntimeError,
                               r"grad: input 0 does not require grad"),
    "grad_outputs_count": (lambda: mg.grad((NEEDS_GRAD * 2).sum(), NEEDS_GRAD, grad_outputs=[1.0, 2.0]), ValueError,
                           r"grad: got 2 grad_outputs for 1 outputs"),
    "retain_grad": (lambda: A.retain_grad(), RuntimeError, r"retain_grad: .*does not require grad"),
    "register_hook": (lambda: A.register_hook(print), RuntimeError, r"register_hook: .*does not require grad"),
    "in_place": (lambda: NEEDS_GRAD.add_(1.0), RuntimeError, r"add_: in-place change of a tensor that requires grad"),
}


@pytest.mark.parametrize("call, error, message", CASES.values(), ids=CASES.keys())
def test_bad_input_raises_a_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_a_failed_op_leaves_no_trace():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(ValueError):
        x + mg.zeros(3)
    (x * 2).sum().backward()  # the tape is unaffected
    np.testing.assert_array_equal(x.grad.data, [2.0, 2.0])
