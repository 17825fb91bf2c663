"""Tests for symbackprop.numpy_erf._erf: accuracy, dtypes, special values, FP flags,
smoothness across the approximation ranges, shapes, and the source-embedding contract."""

import inspect
import math
import textwrap

import numpy
import pytest

from symbackprop.numpy_erf import _erf

F64_EPS = float(numpy.finfo(numpy.float64).eps)
F32_EPS = float(numpy.finfo(numpy.float32).eps)
# Range boundaries of the piecewise approximation (1/0.35 and msun's hi-word cut near it,
# and the 2**-28 clamp of the small-argument polynomial).
BOUNDARIES = (2.0**-28, 0.84375, 1.25, 1.0 / 0.35, 2.8571434020996094, 6.0)


def _grid_f64() -> numpy.ndarray:
    rng = numpy.random.default_rng(12345)
    parts = [
        numpy.linspace(-30.0, 30.0, 120_001),
        numpy.linspace(-6.5, 6.5, 130_001),
        rng.uniform(-7.0, 7.0, 100_000),
        numpy.array([1e-300, 1e-200, 1e-100, 1e-20, 1e-10, 1e-5, 0.0, -0.0]),
        numpy.array([numpy.finfo(numpy.float64).tiny, 2.0**-28, 2.0**-27, 1e-8]),
    ]
    for b in BOUNDARIES:
        parts.append(b + numpy.arange(-100, 101) * numpy.spacing(b))
        parts.append(b * (1.0 + numpy.linspace(-1e-3, 1e-3, 2001)))
    x = numpy.concatenate(parts)
    return numpy.concatenate([x, -x])


def _rel_err(got: numpy.ndarray, ref: numpy.ndarray) -> numpy.ndarray:
    got = numpy.asarray(got, dtype=numpy.float64)
    nz = ref != 0
    assert numpy.all(got[~nz] == 0)
    return numpy.abs(got[nz] - ref[nz]) / numpy.abs(ref[nz])


def test_float64_accuracy_vs_math_erf() -> None:
    x = _grid_f64()
    y = _erf(x)
    assert y.dtype == numpy.float64
    ref = numpy.array([math.erf(v) for v in x])
    # Both are within about 1 ulp of the truth, so they differ by at most ~2 ulp.
    assert _rel_err(y, ref).max() <= 1e-15
    assert _rel_err(y, ref).max() <= 2.5 * F64_EPS


def test_float64_accuracy_vs_mpmath() -> None:
    mpmath = pytest.importorskip("mpmath")
    x = _grid_f64()[::25]
    with mpmath.workdps(40):
        ref = numpy.array([float(mpmath.erf(mpmath.mpf(float(v)))) for v in x])
    got = _erf(x)
    nz = ref != 0
    ulps = numpy.abs(got[nz] - ref[nz]) / numpy.spacing(numpy.abs(ref[nz]))
    assert ulps.max() <= 1.0  # faithfully rounded


def test_float32_dtype_and_accuracy() -> None:
    rng = numpy.random.default_rng(7)
    x = numpy.concatenate(
        [
            numpy.linspace(-10.0, 10.0, 200_001),
            rng.uniform(-5.0, 5.0, 50_000),
            numpy.array([1e-30, numpy.finfo(numpy.float32).tiny, 0.0]),
            numpy.array(BOUNDARIES),
        ]
    ).astype(numpy.float32)
    x = numpy.concatenate([x, -x])
    y = _erf(x)
    assert y.dtype == numpy.float32
    ref = numpy.array([math.erf(float(v)) for v in x])
    assert _rel_err(y, ref).max() <= 2.0 * F32_EPS  # about 1.2e-7 (measured ~7e-8)
    assert _erf(numpy.float32(0.5)).dtype == numpy.float32


def test_other_dtypes() -> None:
    assert _erf(numpy.arange(3)).dtype == numpy.float64
    assert _erf(numpy.array([True])).dtype == numpy.float64
    y16 = _erf(numpy.array([0.5, -2.0], dtype=numpy.float16))
    assert y16.dtype == numpy.float16
    numpy.testing.assert_allclose(y16, [math.erf(0.5), math.erf(-2.0)], rtol=1e-3)
    with pytest.raises(TypeError):
        _erf(numpy.array([1j]))


def test_special_values() -> None:
    y = _erf(numpy.array([numpy.inf, -numpy.inf, numpy.nan, 0.0, -0.0, 6.0, -6.0, 30.0, 1e300]))
    assert y[0] == 1.0 and y[1] == -1.0
    assert numpy.isnan(y[2])
    assert y[3] == 0.0 and not numpy.signbit(y[3])
    assert y[4] == 0.0 and numpy.signbit(y[4])
    assert list(y[5:]) == [1.0, -1.0, 1.0, 1.0]
    y32 = _erf(numpy.array([numpy.inf, -numpy.inf, numpy.nan], dtype=numpy.float32))
    assert y32.dtype == numpy.float32
    assert y32[0] == 1.0 and y32[1] == -1.0 and numpy.isnan(y32[2])


def test_tiny_arguments() -> None:
    two_over_sqrt_pi = 2.0 / math.sqrt(math.pi)
    for v in (1e-300, 1e-200, 1e-20, numpy.finfo(numpy.float64).tiny):
        assert _erf(v) == pytest.approx(two_over_sqrt_pi * v, rel=2 * F64_EPS)
        assert _erf(-v) == -_erf(v)
    # Subnormal input: subnormal result, approximately right (underflow is ignored by default).
    assert _erf(1e-310) == pytest.approx(two_over_sqrt_pi * 1e-310, rel=1e-5)


@pytest.mark.parametrize("dtype", [numpy.float64, numpy.float32])
def test_no_floating_point_warnings(dtype: type) -> None:
    info = numpy.finfo(dtype)
    x = numpy.concatenate(
        [
            numpy.linspace(-30.0, 30.0, 20_001, dtype=dtype),
            numpy.array([info.max, -info.max, info.tiny, -info.tiny], dtype=dtype),
            numpy.array([numpy.inf, -numpy.inf, 0.0, -0.0], dtype=dtype),
            numpy.array(BOUNDARIES, dtype=dtype),
            numpy.array([1e-30, 1e-20, 1e-10], dtype=dtype),
        ]
    )
    # Every flag, underflow included, raises: none may fire for normal or infinite inputs.
    with numpy.errstate(all="raise"):
        _erf(x)
        _erf(x[0])
    # NaN propagates without an "invalid" flag.
    with numpy.errstate(all="raise"):
        assert numpy.isnan(_erf(numpy.array([numpy.nan], dtype=dtype))[0])


@pytest.mark.parametrize("b", BOUNDARIES)
def test_smooth_across_range_boundaries(b: float) -> None:
    # Central differences with h = 1e-6 around each boundary must match the exact derivative.
    # A jump of J at a boundary would show up as an error of J/(2h).  The tolerance is 1e-8
    # relative plus the unavoidable rounding noise of differencing two values that are each
    # within 1 ulp (<= eps) of the truth; near x = 6 the derivative (2.6e-16) is below that
    # noise for any float64 erf.
    h = 1e-6
    x = b + numpy.linspace(-3 * h, 3 * h, 61)
    fd = (_erf(x + h) - _erf(x - h)) / (2 * h)
    exact = 2.0 / math.sqrt(math.pi) * numpy.exp(-(x**2))
    err = numpy.abs(fd - exact)
    assert numpy.all(err <= 1e-8 * exact + 2 * F64_EPS / (2 * h))


@pytest.mark.parametrize("b", BOUNDARIES[1:5])
def test_no_jump_at_boundaries(b: float) -> None:
    # The two neighbouring floats straddling the boundary come from different pieces; erf is
    # monotone, and the step between them must be about erf'(b) * spacing, not an ulp jump.
    lo = numpy.nextafter(b, 0.0)
    xs = numpy.array([numpy.nextafter(lo, 0.0), lo, b, numpy.nextafter(b, 10.0)])
    ys = _erf(xs)
    assert numpy.all(numpy.diff(ys) >= 0)
    refs = numpy.array([math.erf(v) for v in xs])
    assert numpy.all(numpy.abs(ys - refs) <= F64_EPS)


def test_odd_symmetry() -> None:
    x = _grid_f64()
    assert numpy.array_equal(_erf(-x), -_erf(x))
    x32 = x.astype(numpy.float32)
    assert numpy.array_equal(_erf(-x32), -_erf(x32))


def test_shapes() -> None:
    x = numpy.linspace(-4.0, 4.0, 24).reshape(4, 6)
    y = _erf(x)
    assert y.shape == (4, 6)
    assert numpy.array_equal(y.ravel(), _erf(x.ravel()))
    # Non-contiguous view.
    yt = _erf(x.T)
    assert yt.shape == (6, 4)
    assert numpy.array_equal(yt, y.T)
    # 0-d array and Python float give a NumPy scalar, like a ufunc.
    for v in (numpy.array(0.3), 0.3):
        s = _erf(v)
        assert numpy.ndim(s) == 0 and isinstance(s, numpy.float64)
        assert s == pytest.approx(math.erf(0.3), rel=F64_EPS)
    assert _erf(numpy.empty((0, 3))).shape == (0, 3)
    assert _erf(numpy.zeros((2, 0, 5), dtype=numpy.float32)).dtype == numpy.float32


def test_large_array_spans_blocks() -> None:
    # Larger than one internal block, with a mix of every range in each block.
    rng = numpy.random.default_rng(3)
    x = rng.standard_normal(200_003) * 2.5
    x[::1000] = numpy.nan
    y = _erf(x)
    ok = ~numpy.isnan(x)
    assert numpy.array_equal(numpy.isnan(y), ~ok)
    ref = numpy.array([math.erf(v) for v in x[ok]])
    assert _rel_err(y[ok], ref).max() <= 2.5 * F64_EPS


def test_embedding_contract() -> None:
    # The generator pastes inspect.getsource(_erf) into generated modules that import only
    # numpy; the pasted function must work in a namespace holding nothing else.
    src = textwrap.dedent(inspect.getsource(_erf))
    assert "np." not in src.replace("numpy.", "")
    namespace: dict = {"numpy": numpy}
    exec(compile(src, "<generated>", "exec"), namespace)
    assert set(namespace) - {"__builtins__"} == {"numpy", "_erf"}
    fresh = namespace["_erf"]
    x = numpy.linspace(-7.0, 7.0, 1001)
    assert numpy.array_equal(fresh(x), _erf(x))
    assert fresh(numpy.float32(1.5)).dtype == numpy.float32


def test_ndtr_is_accurate_in_both_tails() -> None:
    """Phi(x) = erfc(-x/sqrt(2))/2 to a few ulps where 1 + erf(x/sqrt(2)) cancels to 0."""
    import mpmath

    from symbackprop.numpy_erf import _ndtr

    mpmath.mp.dps = 40
    xs = numpy.concatenate([numpy.linspace(-39.5, 9, 1201), [-37.5, -1.7678, -1.1932, -1.19]])
    with numpy.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        got = _ndtr(xs)
    for x, value in zip(xs, got, strict=True):
        true = mpmath.erfc(-mpmath.mpf(float(x)) / mpmath.sqrt(2)) / 2
        if true < 1e-300:
            assert value < 1e-300
        else:
            assert abs(value - true) / true < 2e-15, x
    assert _ndtr(numpy.float32(-10.0)).dtype == numpy.float32
    assert _ndtr(numpy.array([-50.0, 50.0])).tolist() == [0.0, 1.0]
