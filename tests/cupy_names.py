"""Names of CuPy 14.2's namespaces, its array's methods and their keyword arguments (generated
from cupy-cuda13x 14.2.0 with ``dir()``, ``inspect.signature`` and, for the array's Cython
methods, the signatures embedded in their docstrings).

:mod:`tests.fake_cupy` exposes a NumPy function only when CuPy has one of that name, so code
that calls a NumPy function CuPy lacks fails on the CPU as it would on the GPU.
"""

#: top-level ``cupy`` names that NumPy also has
CUPY_NAMES = frozenset(
    """
    abs absolute acos acosh add all allclose amax amin angle any append apply_along_axis
    apply_over_axes arange arccos arccosh arcsin arcsinh arctan arctan2 arctanh argmax argmin
    argpartition argsort argwhere around array array2string array_equal array_equiv array_repr
    array_split array_str asanyarray asarray asarray_chkfinite ascontiguousarray
    asfortranarray asin asinh astype atan atan2 atanh atleast_1d atleast_2d atleast_3d average
    bartlett base_repr binary_repr bincount bitwise_and bitwise_count bitwise_invert
    bitwise_left_shift bitwise_not bitwise_or bitwise_right_shift bitwise_xor blackman bool
    bool_ broadcast broadcast_arrays broadcast_shapes broadcast_to byte c_ can_cast cbrt
    cdouble ceil choose clip column_stack common_type complex128 complex64 complexfloating
    compress concat concatenate conj conjugate convolve copy copysign copyto corrcoef
    correlate cos cosh count_nonzero cov cross csingle cumprod cumsum cumulative_prod
    cumulative_sum deg2rad degrees delete diag diag_indices diag_indices_from diagflat
    diagonal diff digitize divide divmod dot double dsplit dstack dtype e ediff1d einsum empty
    empty_like equal euler_gamma exceptions exp exp2 expand_dims expm1 extract eye fabs fft
    fill_diagonal finfo fix flatiter flatnonzero flip fliplr flipud float16 float32 float64
    float_power floating floor floor_divide fmax fmin fmod format_float_positional
    format_float_scientific frexp from_dlpack frombuffer fromfile fromfunction fromiter
    fromstring full full_like gcd generic genfromtxt get_printoptions gradient greater
    greater_equal half hamming hanning heaviside histogram histogram2d histogramdd hsplit
    hstack hypot i0 identity iinfo imag index_exp indices inexact inf inner int16 int32 int64
    int8 int_ intc integer interp intersect1d intp invert isclose iscomplex iscomplexobj
    isdtype isfinite isfortran isin isinf isnan isneginf isposinf isreal isrealobj isscalar
    issubdtype iterable ix_ kaiser kron lcm ldexp left_shift less less_equal lexsort lib
    linalg linspace load loadtxt log log10 log1p log2 logaddexp logaddexp2 logical_and
    logical_not logical_or logical_xor logspace long longlong mask_indices matmul
    matrix_transpose max maximum may_share_memory mean median meshgrid mgrid min
    min_scalar_type minimum mintypecode mod modf moveaxis multiply nan nan_to_num nanargmax
    nanargmin nancumprod nancumsum nanmax nanmean nanmedian nanmin nanprod nanstd nansum
    nanvar ndarray ndim ndindex negative newaxis nextafter nonzero not_equal number ogrid ones
    ones_like outer packbits pad partition percentile permute_dims pi piecewise place poly
    poly1d polyadd polyfit polymul polynomial polysub polyval positive pow power printoptions
    prod promote_types ptp put put_along_axis putmask quantile r_ rad2deg radians random ravel
    ravel_multi_index real real_if_close reciprocal remainder repeat require reshape resize
    result_type right_shift rint roll rollaxis roots rot90 round row_stack s_ save savetxt
    savez savez_compressed searchsorted select set_printoptions setdiff1d setxor1d shape
    shares_memory short show_config sign signbit signedinteger sin sinc single sinh size sort
    sort_complex split sqrt square squeeze stack std subtract sum swapaxes take
    take_along_axis tan tanh tensordot testing tile trace transpose trapezoid tri tril
    tril_indices tril_indices_from trim_zeros triu triu_indices triu_indices_from true_divide
    trunc typename typing ubyte ufunc uint uint16 uint32 uint64 uint8 uintc uintp ulong
    ulonglong union1d unique unique_all unique_counts unique_inverse unique_values unpackbits
    unravel_index unsignedinteger unwrap ushort vander var vdot vectorize vsplit vstack where
    zeros zeros_like
    """.split()  # noqa: SIM905 - a list of names, generated
)

#: ``cupyx.scipy.special`` names
CUPYX_SPECIAL_NAMES = frozenset(
    """
    annotations bdtr bdtrc bdtri beta betainc betaincinv betaln binom boxcox boxcox1p btdtr
    btdtri cbrt chdtr chdtrc chdtri cosdg cosm1 cotdg digamma ellipeinc ellipj ellipk
    ellipkinc ellipkm1 entr erf erfc erfcinv erfcx erfinv exp1 exp10 exp2 expi expit expm1
    expn exprel fdtr fdtrc fdtri gamma gammainc gammaincc gammainccinv gammaincinv gammaln
    gammasgn gdtr gdtrc huber i0 i0e i1 i1e inv_boxcox inv_boxcox1p j0 j1 k0 k0e k1 k1e kl_div
    lambertw log1p log_expit log_ndtr log_softmax loggamma logit logsumexp lpmv multigammaln
    nbdtr nbdtrc nbdtri ndtr ndtri pdtr pdtrc pdtri poch polygamma pseudo_huber psi radian
    rel_entr rgamma round shichi sici sinc sindg softmax sph_harm sph_harm_y spherical_yn
    tandg wright_bessel xlog1py xlogy y0 y1 yn zeta zetac
    """.split()  # noqa: SIM905 - a list of names, generated
)

#: keyword arguments CuPy 14.2's functions take, where its signature lists them all
CUPY_KEYWORDS = {
    "all": ("a", "axis", "out", "keepdims"),
    "allclose": ("a", "b", "rtol", "atol", "equal_nan"),
    "amax": ("a", "axis", "out", "keepdims"),
    "amin": ("a", "axis", "out", "keepdims"),
    "angle": ("z", "deg"),
    "any": ("a", "axis", "out", "keepdims"),
    "append": ("arr", "values", "axis"),
    "apply_over_axes": ("func", "a", "axes"),
    "arange": ("start", "stop", "step", "dtype"),
    "argmax": ("a", "axis", "dtype", "out", "keepdims"),
    "argmin": ("a", "axis", "dtype", "out", "keepdims"),
    "argpartition": ("a", "kth", "axis"),
    "argsort": ("a", "axis", "kind"),
    "argwhere": ("a",),
    "around": ("a", "decimals", "out"),
    "array": ("obj", "dtype", "copy", "order", "subok", "ndmin", "blocking"),
    "array_equal": ("a1", "a2", "equal_nan"),
    "array_equiv": ("a1", "a2"),
    "array_repr": ("arr", "max_line_width", "precision", "suppress_small"),
    "array_split": ("ary", "indices_or_sections", "axis"),
    "array_str": ("arr", "max_line_width", "precision", "suppress_small"),
    "asanyarray": ("a", "dtype", "order", "copy", "blocking"),
    "asarray": ("a", "dtype", "order", "copy", "blocking"),
    "asarray_chkfinite": ("a", "dtype", "order"),
    "ascontiguousarray": ("a", "dtype"),
    "asfortranarray": ("a", "dtype"),
    "astype": ("copy",),
    "atleast_1d": (),
    "atleast_2d": (),
    "atleast_3d": (),
    "average": ("a", "axis", "weights", "returned", "keepdims"),
    "bartlett": ("M",),
    "base_repr": ("number", "base", "padding"),
    "binary_repr": ("num", "width"),
    "bincount": ("x", "weights", "minlength"),
    "blackman": ("M",),
    "broadcast_arrays": (),
    "broadcast_shapes": (),
    "broadcast_to": ("array", "shape"),
    "can_cast": ("from_", "to", "casting"),
    "choose": ("a", "choices", "out", "mode"),
    "clip": ("a", "a_min", "a_max", "out"),
    "column_stack": ("tup",),
    "common_type": (),
    "compress": ("condition", "a", "axis", "out"),
    "concat": ("tup", "axis", "out", "dtype", "casting"),
    "concatenate": ("tup", "axis", "out", "dtype", "casting"),
    "convolve": ("a", "v", "mode"),
    "copy": ("a", "order"),
    "copyto": ("dst", "src", "casting", "where"),
    "corrcoef": ("a", "y", "rowvar", "bias", "ddof", "dtype"),
    "correlate": ("a", "v", "mode"),
    "count_nonzero": ("a", "axis"),
    "cov": ("a", "y", "rowvar", "bias", "ddof", "fweights", "aweights", "dtype"),
    "cross": ("a", "b", "axisa", "axisb", "axisc", "axis"),
    "cumprod": ("a", "axis", "dtype", "out"),
    "cumsum": ("a", "axis", "dtype", "out"),
    "cumulative_prod": ("axis", "dtype", "out", "include_initial"),
    "cumulative_sum": ("axis", "dtype", "out", "include_initial"),
    "delete": ("arr", "indices", "axis"),
    "diag": ("v", "k"),
    "diag_indices": ("n", "ndim"),
    "diag_indices_from": ("arr",),
    "diagflat": ("v", "k"),
    "diagonal": ("a", "offset", "axis1", "axis2"),
    "diff": ("a", "n", "axis", "prepend", "append"),
    "digitize": ("x", "bins", "right"),
    "dot": ("a", "b", "out"),
    "dsplit": ("ary", "indices_or_sections"),
    "dstack": ("tup",),
    "ediff1d": ("arr", "to_end", "to_begin"),
    "empty": ("shape", "dtype", "order"),
    "empty_like": ("prototype", "dtype", "order", "subok", "shape"),
    "expand_dims": ("a", "axis"),
    "extract": ("condition", "a"),
    "eye": ("N", "M", "k", "dtype", "order"),
    "fill_diagonal": ("a", "val", "wrap"),
    "flatnonzero": ("a",),
    "flip": ("a", "axis"),
    "fliplr": ("a",),
    "flipud": ("a",),
    "full": ("shape", "fill_value", "dtype", "order"),
    "full_like": ("a", "fill_value", "dtype", "order", "subok", "shape"),
    "get_printoptions": (),
    "gradient": ("f", "axis", "edge_order"),
    "hamming": ("M",),
    "hanning": ("M",),
    "histogram": ("x", "bins", "range", "density", "weights"),
    "histogram2d": ("x", "y", "bins", "range", "weights", "density"),
    "histogramdd": ("sample", "bins", "range", "weights", "density"),
    "hsplit": ("ary", "indices_or_sections"),
    "hstack": ("tup", "dtype", "casting"),
    "identity": ("n", "dtype"),
    "imag": ("val",),
    "indices": ("dimensions", "dtype"),
    "inner": ("a", "b"),
    "interp": ("x", "xp", "fp", "left", "right", "period"),
    "intersect1d": ("arr1", "arr2", "assume_unique", "return_indices"),
    "isclose": ("a", "b", "rtol", "atol", "equal_nan"),
    "iscomplex": ("x",),
    "iscomplexobj": ("x",),
    "isdtype": ("dtype", "kind"),
    "isfortran": ("a",),
    "isin": ("element", "test_elements", "assume_unique", "invert"),
    "isneginf": ("x", "out"),
    "isposinf": ("x", "out"),
    "isreal": ("x",),
    "isrealobj": ("x",),
    "isscalar": ("element",),
    "issubdtype": ("arg1", "arg2"),
    "iterable": ("y",),
    "ix_": (),
    "kaiser": ("M", "beta"),
    "kron": ("a", "b"),
    "lexsort": ("keys",),
    "linspace": ("start", "stop", "num", "endpoint", "retstep", "dtype", "axis"),
    "load": ("file", "mmap_mode", "allow_pickle"),
    "logspace": ("start", "stop", "num", "endpoint", "base", "dtype", "axis"),
    "mask_indices": ("n", "mask_func", "k"),
    "matmul": ("axes", "axis", "keepdims", "casting", "dtype", "signature", "order", "out"),
    "matrix_transpose": (),
    "max": ("a", "axis", "out", "keepdims"),
    "may_share_memory": ("a", "b", "max_work"),
    "mean": ("a", "axis", "dtype", "out", "keepdims"),
    "median": ("a", "axis", "out", "overwrite_input", "keepdims"),
    "min": ("a", "axis", "out", "keepdims"),
    "mintypecode": ("typechars", "typeset", "default"),
    "moveaxis": ("a", "source", "destination"),
    "nan_to_num": ("x", "copy", "nan", "posinf", "neginf"),
    "nanargmax": ("a", "axis", "dtype", "out", "keepdims"),
    "nanargmin": ("a", "axis", "dtype", "out", "keepdims"),
    "nancumprod": ("a", "axis", "dtype", "out"),
    "nancumsum": ("a", "axis", "dtype", "out"),
    "nanmax": ("a", "axis", "out", "keepdims"),
    "nanmean": ("a", "axis", "dtype", "out", "keepdims"),
    "nanmedian": ("a", "axis", "out", "overwrite_input", "keepdims"),
    "nanmin": ("a", "axis", "out", "keepdims"),
    "nanprod": ("a", "axis", "dtype", "out", "keepdims"),
    "nanstd": ("a", "axis", "dtype", "out", "ddof", "keepdims"),
    "nansum": ("a", "axis", "dtype", "out", "keepdims"),
    "nanvar": ("a", "axis", "dtype", "out", "ddof", "keepdims"),
    "ndim": ("a",),
    "nonzero": ("a",),
    "ones": ("shape", "dtype", "order"),
    "ones_like": ("a", "dtype", "order", "subok", "shape"),
    "outer": ("a", "b", "out"),
    "packbits": ("a", "axis", "bitorder"),
    "partition": ("a", "kth", "axis"),
    "percentile": (
        "a",
        "q",
        "axis",
        "out",
        "overwrite_input",
        "method",
        "keepdims",
        "interpolation",
    ),
    "permute_dims": ("a", "axes"),
    "piecewise": ("x", "condlist", "funclist"),
    "place": ("arr", "mask", "vals"),
    "poly": ("seq_of_zeros",),
    "polyadd": ("a1", "a2"),
    "polyfit": ("x", "y", "deg", "rcond", "full", "w", "cov"),
    "polymul": ("a1", "a2"),
    "polysub": ("a1", "a2"),
    "polyval": ("p", "x"),
    "prod": ("a", "axis", "dtype", "out", "keepdims"),
    "promote_types": (),
    "ptp": ("a", "axis", "out", "keepdims"),
    "put": ("a", "ind", "v", "mode"),
    "put_along_axis": ("arr", "indices", "values", "axis"),
    "putmask": ("a", "mask", "values"),
    "quantile": ("a", "q", "axis", "out", "overwrite_input", "method", "keepdims", "interpolation"),
    "ravel": ("a", "order"),
    "ravel_multi_index": ("multi_index", "dims", "mode", "order"),
    "real": ("val",),
    "real_if_close": ("a", "tol"),
    "repeat": ("a", "repeats", "axis"),
    "require": ("a", "dtype", "requirements"),
    "reshape": ("a", "newshape", "order", "copy"),
    "resize": ("a", "new_shape"),
    "result_type": (),
    "roll": ("a", "shift", "axis"),
    "rollaxis": ("a", "axis", "start"),
    "roots": ("p",),
    "rot90": ("a", "k", "axes"),
    "round": ("a", "decimals", "out"),
    "row_stack": ("tup", "dtype", "casting"),
    "save": ("file", "arr", "allow_pickle"),
    "searchsorted": ("a", "v", "side", "sorter"),
    "select": ("condlist", "choicelist", "default"),
    "set_printoptions": (
        "precision",
        "threshold",
        "edgeitems",
        "linewidth",
        "suppress",
        "nanstr",
        "infstr",
        "formatter",
        "sign",
        "floatmode",
        "legacy",
        "override_repr",
    ),
    "setdiff1d": ("ar1", "ar2", "assume_unique"),
    "setxor1d": ("ar1", "ar2", "assume_unique"),
    "shape": ("a",),
    "shares_memory": ("a", "b", "max_work"),
    "show_config": ("_full",),
    "sort": ("a", "axis", "kind"),
    "sort_complex": ("a",),
    "split": ("ary", "indices_or_sections", "axis"),
    "squeeze": ("a", "axis"),
    "stack": ("tup", "axis", "out", "dtype", "casting"),
    "std": ("a", "axis", "dtype", "out", "ddof", "keepdims"),
    "sum": ("a", "axis", "dtype", "out", "keepdims"),
    "swapaxes": ("a", "axis1", "axis2"),
    "take": ("a", "indices", "axis", "out"),
    "take_along_axis": ("a", "indices", "axis"),
    "tensordot": ("a", "b", "axes"),
    "tile": ("A", "reps"),
    "trace": ("a", "offset", "axis1", "axis2", "dtype", "out"),
    "transpose": ("a", "axes"),
    "trapezoid": ("y", "x", "dx", "axis"),
    "tri": ("N", "M", "k", "dtype"),
    "tril": ("m", "k"),
    "tril_indices": ("n", "k", "m"),
    "tril_indices_from": ("arr", "k"),
    "trim_zeros": ("filt", "trim"),
    "triu": ("m", "k"),
    "triu_indices": ("n", "k", "m"),
    "triu_indices_from": ("arr", "k"),
    "typename": ("char",),
    "union1d": ("arr1", "arr2"),
    "unique": ("ar", "return_index", "return_inverse", "return_counts", "axis", "equal_nan"),
    "unique_all": ("x",),
    "unique_counts": ("x",),
    "unique_inverse": ("x",),
    "unique_values": ("x",),
    "unpackbits": ("a", "axis", "bitorder"),
    "unravel_index": ("indices", "dims", "order"),
    "unwrap": ("p", "discont", "axis", "period"),
    "vander": ("x", "N", "increasing"),
    "var": ("a", "axis", "dtype", "out", "ddof", "keepdims"),
    "vdot": ("a", "b"),
    "vsplit": ("ary", "indices_or_sections"),
    "vstack": ("tup", "dtype", "casting"),
    "where": ("condition", "x", "y"),
    "zeros": ("shape", "dtype", "order"),
    "zeros_like": ("a", "dtype", "order", "subok", "shape"),
}


#: public attributes of ``cupy.ndarray`` (CuPy 14.2; ``dir()``)
CUPY_NDARRAY_NAMES = frozenset(
    """
    T all any argmax argmin argpartition argsort astype base byteswap choose clip compress conj
    conjugate copy cstruct cumprod cumsum data device diagonal dot dtype dump dumps fill flags
    flat flatten get imag item itemsize mT max mdspan mean min nbytes ndim nonzero partition
    prod ptp put ravel real reduced_view repeat reshape round scatter_add scatter_max
    scatter_min searchsorted set shape size sort squeeze std strides sum swapaxes take toDlpack
    tobytes tofile tolist trace transpose var view
    """.split()  # noqa: SIM905 - a list of names, generated
)

#: keyword arguments of ``cupy.ndarray`` methods (CuPy 14.2; from the signatures Cython embeds
#: in their docstrings, ``inspect.signature`` cannot read them)
CUPY_NDARRAY_KEYWORDS = {
    "all": ("axis", "out", "keepdims"),
    "any": ("axis", "out", "keepdims"),
    "argmax": ("axis", "out", "dtype", "keepdims"),
    "argmin": ("axis", "out", "dtype", "keepdims"),
    "argpartition": ("kth", "axis"),
    "argsort": ("axis", "kind"),
    "astype": ("dtype", "order", "casting", "subok", "copy"),
    "byteswap": ("inplace",),
    "choose": ("choices", "out", "mode"),
    "clip": ("min", "max", "out"),
    "compress": ("condition", "axis", "out"),
    "conj": (),
    "conjugate": (),
    "copy": ("order",),
    "cumprod": ("axis", "dtype", "out"),
    "cumsum": ("axis", "dtype", "out"),
    "diagonal": ("offset", "axis1", "axis2"),
    "dot": ("b", "out"),
    "dump": ("file",),
    "dumps": (),
    "fill": ("value",),
    "flatten": ("order",),
    "get": ("stream", "order", "out", "blocking"),
    "item": (),
    "max": ("axis", "out", "keepdims"),
    "mdspan": ("index_type", "allow_unsafe"),
    "mean": ("axis", "dtype", "out", "keepdims"),
    "min": ("axis", "out", "keepdims"),
    "nonzero": (),
    "partition": ("kth", "axis"),
    "prod": ("axis", "dtype", "out", "keepdims"),
    "ptp": ("axis", "out", "keepdims"),
    "put": ("indices", "values", "mode"),
    "ravel": ("order",),
    "reduced_view": ("dtype",),
    "repeat": ("repeats", "axis"),
    "reshape": ("order", "copy"),
    "round": ("decimals", "out"),
    "scatter_add": ("slices", "value"),
    "scatter_max": ("slices", "value"),
    "scatter_min": ("slices", "value"),
    "searchsorted": ("v", "side", "sorter"),
    "set": ("arr", "stream"),
    "sort": ("axis", "kind"),
    "squeeze": ("axis",),
    "std": ("axis", "dtype", "out", "ddof", "keepdims"),
    "sum": ("axis", "dtype", "out", "keepdims"),
    "swapaxes": ("axis1", "axis2"),
    "take": ("indices", "axis", "out"),
    "toDlpack": (),
    "tobytes": ("order",),
    "tofile": ("fid", "sep", "format"),
    "tolist": (),
    "trace": ("offset", "axis1", "axis2", "dtype", "out"),
    "transpose": (),
    "var": ("axis", "dtype", "out", "ddof", "keepdims"),
    "view": ("dtype", "type"),
}
