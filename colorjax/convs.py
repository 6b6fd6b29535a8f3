"""Fast forms of the 3x3 'SAME' convolutions of colorjax's networks on XLA's CPU backend.

Each function here computes the same value and gradients as lax.conv (up to float rounding), in a
form XLA's CPU backend runs faster: kernel gradients as matmuls, by Winograd's F(2x2, 3x3) at
stride 1 (winograd_kernel_grad) or over shifted taps (kernel_grad); stride-2 convolutions from
polyphase components; wide stride-1 convolutions by Winograd's F(2x2, 3x3); and upsample2
followed by a convolution as one 2x2 convolution at the input's resolution (upsample2_conv3x3).
`forms` decides which one a layer takes; fast_conv3x3 runs it, and models.FastConv3x3 wraps it
as a Flax layer (conv='matmul').
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np


def same_padding(size, stride, window=3):
  """(before, after) padding of lax.conv's 'SAME' along one axis."""
  total = max((-(-size // stride) - 1) * stride + window - size, 0)
  return total // 2, total - total // 2


def window_taps(x_padded_xHpxWpxC, stride, h, w):
  """The 9 taps of a 3x3 window over an input already padded, tap-major (the order of a
  (3, 3, C, N) kernel): tap (i, j) is the (..., h, w, C) input that kernel row i, column j sees
  at each of the h x w output positions."""
  s = stride
  return [x_padded_xHpxWpxC[..., i : i + s * (h - 1) + 1 : s, j : j + s * (w - 1) + 1 : s, :]
          for i in range(3) for j in range(3)]  # fmt: skip


def _dot_f32(a, b):
  return jnp.matmul(a, b, preferred_element_type=jnp.float32)


def _taps_times_grad(taps_PxC, g_PxN):
  """tap^T g for each (P, C) tap, stacked: a kernel gradient tap by tap, in float32."""
  return jnp.stack([_dot_f32(t.T, g_PxN) for t in taps_PxC])


# Output positions per band of kernel_grad's scan (whole rows of one image): a band's input rows
# and gradient rows (~0.5-2 MB at the seed network's widths) stay in cache while its 9 taps are
# cut and multiplied.
KERNEL_GRAD_BAND = 2048
# Below this many output features XLA's own kernel gradient is faster (docs/convs.md).
KERNEL_GRAD_MIN_FEATURES = 8


def kernel_grad(x_BxHxWxC, g_BxhxwxN, stride, band=KERNEL_GRAD_BAND):
  """The kernel gradient (3, 3, C, N) of a 3x3 'SAME' convolution: dK[i, j] = sum over output
  positions of tap (i, j)^T g, blocked for the cache.

  A scan over (image, band of R = band // w output rows): each band's 9 taps are cut from its
  s (R - 1) + 3 padded input rows while they sit in cache, and multiplied by its gradient rows,
  as one (R w, 9 C)^T (R w, N) matmul for C >= 128, or as 9 matmuls for fewer channels (there the
  im2col concatenation costs more than it saves). band=0 takes each tap over the whole batch
  instead, streaming both tensors from memory 9 times: bench.train times it as the baseline (the
  scan, now used by the seed network's stride-2 layers, trains it 1.25x faster at 256 px and as
  fast at 128 px, on a 2-core CPU). Products accumulate in float32.
  """
  B, H, W, C = x_BxHxWxC.shape
  _, h, w, N = g_BxhxwxN.shape
  s = stride
  (top, bottom), (left, right) = same_padding(H, s), same_padding(W, s)
  if band == 0:
    xp = jnp.pad(x_BxHxWxC, ((0, 0), (top, bottom), (left, right), (0, 0)))
    taps = [t.reshape(-1, C) for t in window_taps(xp, s, h, w)]
    return _taps_times_grad(taps, g_BxhxwxN.reshape(-1, N)).reshape(3, 3, C, N)
  R = max(1, min(h, band // w))
  bands = -(-h // R)
  g = jnp.pad(g_BxhxwxN, ((0, 0), (0, bands * R - h), (0, 0), (0, 0)))  # zero rows add nothing
  rows = s * (R - 1) + 3  # the padded input rows one band reads
  bottom = max(bottom, s * (bands * R - 1) + 3 - top - H)  # the last band's rows, remainder too
  xp = jnp.pad(x_BxHxWxC, ((0, 0), (top, bottom), (left, right), (0, 0)))

  def add_band(acc_9xCxN, k):
    b, j = k // bands, k % bands
    x_band = jax.lax.dynamic_slice(xp, (b, j * R * s, 0, 0), (1, rows, xp.shape[2], C))[0]
    g_band = jax.lax.dynamic_slice(g, (b, j * R, 0, 0), (1, R, w, N))[0].reshape(R * w, N)
    taps = [t.reshape(R * w, C) for t in window_taps(x_band, s, R, w)]
    if C >= 128:
      d = _dot_f32(jnp.concatenate(taps, axis=1).T, g_band).reshape(9, C, N)
    else:
      d = _taps_times_grad(taps, g_band)
    return acc_9xCxN + d, None

  init = jnp.zeros((9, C, N), jnp.float32)
  acc, _ = jax.lax.scan(add_band, init, jnp.arange(B * bands, dtype=jnp.int32))
  return acc.reshape(3, 3, C, N)


_DIMS = ('NHWC', 'HWIO', 'NHWC')


def _lax_conv(x_BxHxWxC, kernel_3x3xCxN, stride):
  return jax.lax.conv_general_dilated(
    x_BxHxWxC, kernel_3x3xCxN, (stride, stride), 'SAME', dimension_numbers=_DIMS
  )


def _padded_conv(x_BxHxWxC, kernel, padding):
  """A stride-1 convolution with lax's explicit (before, after) padding per axis."""
  return jax.lax.conv_general_dilated(x_BxHxWxC, kernel, (1, 1), padding, dimension_numbers=_DIMS)


# XLA's CPU backend runs a stride-1 convolution padded by one on both sides faster than a
# stride-2 one, or one padded on one side only (docs/convs.md): a stride-2 'SAME' convolution of
# an even-sized input (padded below and right only) and its input gradient are computed from
# polyphase components with such convolutions. Per axis, with K0, K1, K2 the kernel's rows:
#   value:          y[o] = x[2o] K0 + x[2o + 1] K1 + x[2o + 2] K2
#   input gradient: dx[2o] = g[o - 1] K2^T + g[o] K0^T,  dx[2o + 1] = g[o] K1^T
# A 2-tap axis is a convolution padded (1, 1) whose first (value) or last (gradient) row is
# dropped; the 1-tap axis takes the middle kernel row.


# Fewer input channels stay with lax's stride-2 convolution: the four phase convolutions cost
# more than they save on thin inputs (the seed network's 1-channel first layer).
PHASE_MIN_CHANNELS = 32


def _conv_stride2_phases(x_BxHxWxC, kernel_3x3xCxN):
  """_lax_conv(x, kernel, 2) for even H and W (see forms)."""
  phase = lambda a, b: x_BxHxWxC[:, a::2, b::2]
  k = kernel_3x3xCxN
  y = _padded_conv(phase(0, 0), k[0::2, 0::2], ((1, 1), (1, 1)))[:, 1:, 1:]
  y = y + _padded_conv(phase(0, 1), k[0::2, 1:2], ((1, 1), (0, 0)))[:, 1:]
  y = y + _padded_conv(phase(1, 0), k[1:2, 0::2], ((0, 0), (1, 1)))[:, :, 1:]
  return y + _padded_conv(phase(1, 1), k[1:2, 1:2], ((0, 0), (0, 0)))


def _conv_stride2_input_grad(g_BxhxwxN, kernel_3x3xCxN):
  """The gradient of _conv_stride2_phases with respect to its (B, 2h, 2w, C) input."""
  B, h, w, _ = g_BxhxwxN.shape
  k = kernel_3x3xCxN.transpose(0, 1, 3, 2)  # (3, 3, N, C)
  g = g_BxhxwxN
  dx00 = _padded_conv(g, k[::-2, ::-2], ((1, 1), (1, 1)))[:, :h, :w]
  dx01 = _padded_conv(g, k[::-2, 1:2], ((1, 1), (0, 0)))[:, :h]
  dx10 = _padded_conv(g, k[1:2, ::-2], ((0, 0), (1, 1)))[:, :, :w]
  dx11 = _padded_conv(g, k[1:2, 1:2], ((0, 0), (0, 0)))
  rows = [jnp.stack(pair, axis=3) for pair in ((dx00, dx01), (dx10, dx11))]  # (B, h, w, b, C)
  return jnp.stack(rows, axis=2).reshape(B, 2 * h, 2 * w, -1)  # (B, h, a, w, b, C)


# Winograd F(2x2, 3x3): a stride-1 3x3 convolution as 16 matmuls over 2x2 output tiles, 4 rather
# than 9 multiplications an output; it pays where the matmuls dominate the tile transforms.
WINOGRAD_MIN_CHANNELS = 256
# ... and on at least 32x32 pixels: on smaller layers the tile transforms cost more than they
# save.
WINOGRAD_MIN_PIXELS = 32 * 32
_WINO_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)


def _input_transform(a0, a1, a2, a3):
  """B^T along one axis of a 4-row tile."""
  return a0 - a2, a1 + a2, a2 - a1, a1 - a3


def _winograd_tiles(x_BxHxWxC):
  """B^T d B of every 4x4 input tile d (rows and columns 2t .. 2t + 3 of x padded by 1), the
  input transform of F(2x2, 3x3): a 4x4 nested list of (B, H/2, W/2, C) arrays, for even H, W."""
  _, H, W, _ = x_BxHxWxC.shape
  h, w = H // 2, W // 2
  xp = jnp.pad(x_BxHxWxC, ((0, 0), (1, 1), (1, 1), (0, 0)))
  even, odd = xp[:, 0::2], xp[:, 1::2]  # tile rows 2t, 2t + 1 and (shifted by one) 2t + 2, 2t + 3
  tiles = []
  for r in _input_transform(even[:, :h], odd[:, :h], even[:, 1:], odd[:, 1:]):
    e, o = r[:, :, 0::2], r[:, :, 1::2]
    tiles.append(_input_transform(e[:, :, :w], o[:, :, :w], e[:, :, 1:], o[:, :, 1:]))
  return tiles


def _winograd_conv(x_BxHxWxC, kernel_3x3xCxN):
  """_lax_conv(x, kernel, 1) for even H and W, by Winograd F(2x2, 3x3)."""
  B, H, W, C = x_BxHxWxC.shape
  N = kernel_3x3xCxN.shape[-1]
  h, w = H // 2, W // 2
  U = jnp.einsum('ui,ijcn,vj->uvcn', _WINO_G, kernel_3x3xCxN, _WINO_G)  # (4, 4, C, N)
  U = U.astype(x_BxHxWxC.dtype)
  M = [
    [jnp.matmul(t.reshape(-1, C), U[u, v]) for v, t in enumerate(row)]
    for u, row in enumerate(_winograd_tiles(x_BxHxWxC))
  ]
  # A^T = [[1, 1, 1, 0], [0, 1, -1, -1]] along both axes.
  rows = ([a + b + c for a, b, c in zip(*M[:3])], [b - c - d for b, c, d in zip(*M[1:])])
  y = jnp.stack([jnp.stack([r[0] + r[1] + r[2], r[1] - r[2] - r[3]]) for r in rows])
  return y.reshape(2, 2, B, h, w, N).transpose(2, 3, 0, 4, 1, 5).reshape(B, H, W, N)


# The kernel gradient by the same tiles: with the convolution's value sum_uv A[u, o] A[v, p]
# (G K G^T)_uv (B^T d B)_uv over a tile's outputs (o, p), its gradient with respect to K is
#   dK = G^T [sum over tiles (A g A^T) * (B^T d B)] G,
# g the tile's 2x2 output gradient: 16 matmuls over tiles, (T, C)^T (T, N), 16 multiplications for
# a tile's 36 products: faster than kernel_grad from 16 input channels at any size, slower
# below (docs/convs.md).
WINOGRAD_KERNEL_GRAD_MIN_CHANNELS = 16


def _grad_transform(g0, g1):
  """A g along one axis of a 2-row output-gradient tile (A = [[1, 0], [1, 1], [1, -1], [0, -1]])."""
  return g0, g0 + g1, g0 - g1, -g1


def winograd_kernel_grad(x_BxHxWxC, g_BxHxWxN):
  """The kernel gradient (3, 3, C, N) of a stride-1 3x3 'SAME' convolution for even H and W, by
  the transpose of Winograd's F(2x2, 3x3); products accumulate in float32."""
  C, N = x_BxHxWxC.shape[-1], g_BxHxWxN.shape[-1]
  g = g_BxHxWxN
  M = []
  for row, q in zip(_winograd_tiles(x_BxHxWxC), _grad_transform(g[:, 0::2], g[:, 1::2])):
    grads = _grad_transform(q[:, :, 0::2], q[:, :, 1::2])
    M.append([_dot_f32(t.reshape(-1, C).T, d.reshape(-1, N)) for t, d in zip(row, grads)])
  return jnp.einsum('ui,vj,uvcn->ijcn', _WINO_G, _WINO_G, jnp.asarray(M))


@dataclasses.dataclass(frozen=True)
class Forms:
  """How fast_conv3x3 computes one layer: its value, input gradient and kernel gradient.

  value, input_grad: 'xla' (lax.conv and its vjp), 'phases' (polyphase components, stride 2 on
  even sizes) or 'winograd' (F(2x2, 3x3) matmuls). kernel_grad: 'xla', 'winograd'
  (winograd_kernel_grad), 'bands' (kernel_grad's scan over bands of output rows) or 'taps'
  (kernel_grad with band 0: each tap over the whole batch).
  """

  value: str
  input_grad: str
  kernel_grad: str

  def __str__(self):
    return (
      f'value {self.value}, input gradient {self.input_grad}, kernel gradient {self.kernel_grad}'
    )


def forms(x_shape, kernel_shape, stride, band=KERNEL_GRAD_BAND):
  """The Forms fast_conv3x3 takes for an input of x_shape (B, H, W, C), a (3, 3, C, N) kernel
  and a stride: the one place that decides, so a layer's choice can be tested and printed."""
  _, H, W, C = x_shape
  N = kernel_shape[-1]
  even = H % 2 == 0 and W % 2 == 0
  if stride == 2 and even and C >= PHASE_MIN_CHANNELS:
    value = input_grad = 'phases'
  elif stride == 1 and even and min(C, N) >= WINOGRAD_MIN_CHANNELS and H * W >= WINOGRAD_MIN_PIXELS:
    value = input_grad = 'winograd'
  else:
    value = input_grad = 'xla'
  if N < KERNEL_GRAD_MIN_FEATURES:
    kernel = 'xla'
  elif stride == 1 and even and C >= WINOGRAD_KERNEL_GRAD_MIN_CHANNELS:
    kernel = 'winograd'
  else:
    kernel = 'bands' if band else 'taps'
  return Forms(value, input_grad, kernel)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def fast_conv3x3(x_BxHxWxC, kernel_3x3xCxN, stride, band=KERNEL_GRAD_BAND):
  """lax.conv (3x3, 'SAME', stride) in the forms XLA's CPU backend runs fastest (see `forms`).

  Same value and gradients as lax.conv up to float rounding. band: the output positions per
  band of kernel_grad (0: unbanded), for the layers whose kernel gradient it computes.
  """
  value = forms(x_BxHxWxC.shape, kernel_3x3xCxN.shape, stride, band).value
  if value == 'phases':
    return _conv_stride2_phases(x_BxHxWxC, kernel_3x3xCxN)
  if value == 'winograd':
    return _winograd_conv(x_BxHxWxC, kernel_3x3xCxN)
  return _lax_conv(x_BxHxWxC, kernel_3x3xCxN, stride)


def _conv_fwd(x, kernel, stride, band):
  return fast_conv3x3(x, kernel, stride, band), (x, kernel)


def _conv_bwd(stride, band, residuals, g_BxhxwxN):
  x, kernel = residuals
  chosen = forms(x.shape, kernel.shape, stride, band)
  if chosen.input_grad == 'phases':
    dx = _conv_stride2_input_grad(g_BxhxwxN, kernel)
  elif chosen.input_grad == 'winograd':
    dx = _winograd_conv(g_BxhxwxN, kernel[::-1, ::-1].transpose(0, 1, 3, 2))
  else:
    (dx,) = jax.vjp(lambda x: _lax_conv(x, kernel, stride), x)[1](g_BxhxwxN)
  if chosen.kernel_grad == 'xla':
    (dk,) = jax.vjp(lambda k: _lax_conv(x, k, stride), kernel)[1](g_BxhxwxN)
  elif chosen.kernel_grad == 'winograd':
    dk = winograd_kernel_grad(x, g_BxhxwxN)
  else:
    dk = kernel_grad(x, g_BxhxwxN, stride, band)
  return dx, dk.astype(kernel.dtype)


fast_conv3x3.defvjp(_conv_fwd, _conv_bwd)


# upsample2 then a 3x3 'SAME' convolution reads, for output row 2h + a, upsampled rows 2h + a - 1,
# 2h + a, 2h + a + 1, that is input rows (h - 1, h, h) for a = 0 and (h, h, h + 1) for a = 1.
# So each output phase is a 2x2 convolution of the input whose taps sum kernel rows:
# _UP_TAPS[a, t, r] = 1 when tap t (input row h - 1 + a + t) of phase a takes kernel row r.
# Columns work the same way.
_UP_TAPS = np.array([[[1, 0, 0], [0, 1, 1]], [[1, 1, 0], [0, 0, 1]]], np.float32)


def upsample_kernel(kernel_3x3xCxN):
  """The (2, 2, C, 4N) kernel of upsample2_conv3x3: output channels blocked by phase (a, b)."""
  _, _, C, N = kernel_3x3xCxN.shape
  k = jnp.einsum('atr,buc,rcin->tuiabn', _UP_TAPS, _UP_TAPS, kernel_3x3xCxN)
  return k.reshape(2, 2, C, 4 * N)


def upsample2_conv3x3(x_BxhxwxC, kernel_3x3xCxN):
  """lax.conv(upsample2(x), kernel, stride 1, 'SAME'), computed at x's resolution.

  One 2x2 convolution of x (padded by 1) with upsample_kernel's 4N outputs gives every output
  phase: phase (a, b) of output pixel (h, w) is its output (h + a, w + b), block (a, b). That is
  4/9 of the multiplications, and the upsampled input is never written. Its kernel gradient is
  computed as matmuls (conv2x2_matmul_grad).
  """
  B, h, w, _ = x_BxhxwxC.shape
  N = kernel_3x3xCxN.shape[-1]
  z = conv2x2_matmul_grad(x_BxhxwxC, upsample_kernel(kernel_3x3xCxN).astype(x_BxhxwxC.dtype))
  z = z.reshape(B, h + 1, w + 1, 2, 2, N)
  rows = [jnp.stack([z[:, a : a + h, b : b + w, a, b] for b in range(2)], axis=3) for a in (0, 1)]
  return jnp.stack(rows, axis=2).reshape(B, 2 * h, 2 * w, N)  # (B, h, a, w, b, N)


def _lax_conv2x2(x_BxhxwxC, kernel_2x2xCxM):
  """The 2x2 convolution of x padded by 1 on every side: (B, h + 1, w + 1, M)."""
  return _padded_conv(x_BxhxwxC, kernel_2x2xCxM, ((1, 1), (1, 1)))


@jax.custom_vjp
def conv2x2_matmul_grad(x_BxhxwxC, kernel_2x2xCxM):
  """_lax_conv2x2 whose kernel gradient is 4 matmuls (XLA's CPU convolution takes ~100x longer)."""
  return _lax_conv2x2(x_BxhxwxC, kernel_2x2xCxM)


def _conv2x2_fwd(x, kernel):
  return _lax_conv2x2(x, kernel), (x, kernel)


def _conv2x2_bwd(residuals, g_BxHxWxM):
  x, kernel = residuals
  _, h, w, C = x.shape
  M = g_BxHxWxM.shape[-1]
  # dx[p] = g[p] kernel[1]^T + g[p + 1] kernel[0]^T (per axis): a 2x2 convolution of g with the
  # flipped, transposed kernel. Padded at the end and cropped, XLA's CPU backend runs it 2-2.5x
  # faster than the same convolution 'VALID' (jax.vjp's form).
  flipped = kernel[::-1, ::-1].transpose(0, 1, 3, 2)
  dx = _padded_conv(g_BxHxWxM, flipped, ((0, 1), (0, 1)))[:, :h, :w]
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  taps = [xp[:, i : i + h + 1, j : j + w + 1].reshape(-1, C) for i in (0, 1) for j in (0, 1)]
  dk = _taps_times_grad(taps, g_BxHxWxM.reshape(-1, M))
  return dx, dk.reshape(2, 2, C, M).astype(kernel.dtype)


conv2x2_matmul_grad.defvjp(_conv2x2_fwd, _conv2x2_bwd)


def depthwise_conv(x_BxHxWxC, kernel_kxkx1xC, stride):
  """lax.conv with feature_group_count=C, 'SAME' padding, as a sum of k * k shifted products.

  XLA's CPU backend runs grouped convolutions (and their gradients) several times slower than
  these fused elementwise products (EfficientNet-Lite0's layers at 128 px: 2.5-20x, value and
  gradients, docs/convs.md); autodiff of the sum gives the gradients in the same form.
  """
  k = kernel_kxkx1xC.shape[0]
  _, H, W, _ = x_BxHxWxC.shape
  (top, bottom), (left, right) = same_padding(H, stride, k), same_padding(W, stride, k)
  xp = jnp.pad(x_BxHxWxC, ((0, 0), (top, bottom), (left, right), (0, 0)))
  h, w = -(-H // stride), -(-W // stride)
  y = 0
  for i in range(k):
    for j in range(k):
      tap = xp[:, i : i + stride * (h - 1) + 1 : stride, j : j + stride * (w - 1) + 1 : stride]
      y = y + tap * kernel_kxkx1xC[i, j, 0]
  return y
