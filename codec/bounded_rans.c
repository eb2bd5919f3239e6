/* A bounds-checked decoder for the rANS strings of compressai's coder.
 *
 * compressai's RansDecoder trusts its input: it reads 32-bit words past the end of a short
 * or forged string and follows a forged escape ("bypass") count for up to 2^31 reads, so an
 * untrusted stream can crash the process or read foreign memory.  This decoder reads the same
 * format (64-bit state, 32-bit words, 16-bit CDF precision, 4-bit bypass digits; the
 * encoder stays compressai's BufferedRansEncoder) but checks every read against the string's
 * end, every table index against the tables, and every escape count against what an encoder
 * can write, and reports a problem instead of reading on.  It decodes into a caller-owned
 * int32 buffer instead of building a Python list.
 *
 *   decode(data, pos, state, indexes, cdfs, stride, lengths, offsets, out) -> (pos, state)
 *
 * data: the string (bytes-like); pos: index of the next 32-bit word to read; state: the rANS
 * state (the first two words at the start of a string, see featcodec's entropy module);
 * indexes: int32 table index of each symbol; cdfs: int32 table rows of `stride` entries;
 * lengths, offsets: int32 per table; out: writable int32, one per index.  Raises ValueError
 * naming the problem.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#define PRECISION 16
#define RANS_L (1ull << 31)
#define BYPASS_BITS 4
#define BYPASS_MAX ((1u << BYPASS_BITS) - 1)
/* a 32-bit escaped value has at most 8 digits of 4 bits */
#define MAX_BYPASS_DIGITS 8

typedef struct {
    const uint32_t *words;
    Py_ssize_t n_words;
    Py_ssize_t pos;
    uint64_t x;
} Cursor;

/* 0 on success, -1 when the string has no word left to read */
static inline int refill(Cursor *c) {
    if (c->x < RANS_L) {
        if (c->pos >= c->n_words) return -1;
        c->x = (c->x << 32) | c->words[c->pos++];
    }
    return 0;
}

static inline int get_bits(Cursor *c, uint32_t *val) {
    *val = (uint32_t)(c->x & BYPASS_MAX);
    c->x >>= BYPASS_BITS;
    return refill(c);
}

static PyObject *decode(PyObject *self, PyObject *args) {
    Py_buffer data = {0}, indexes = {0}, cdfs = {0}, lengths = {0}, offsets = {0}, out = {0};
    Py_ssize_t pos, stride;
    unsigned long long state;
    PyObject *result = NULL;
    const char *error = NULL;

    if (!PyArg_ParseTuple(args, "y*nKy*y*ny*y*w*", &data, &pos, &state, &indexes, &cdfs,
                          &stride, &lengths, &offsets, &out))
        return NULL;

    Py_ssize_t n = indexes.len / 4, n_tables = lengths.len / 4;
    const int32_t *idx = (const int32_t *)indexes.buf;
    const int32_t *cdf = (const int32_t *)cdfs.buf;
    const int32_t *len = (const int32_t *)lengths.buf;
    const int32_t *off = (const int32_t *)offsets.buf;
    int32_t *dst = (int32_t *)out.buf;

    if (data.len % 4 || indexes.len % 4 || lengths.len % 4 || offsets.len != lengths.len ||
        out.len != indexes.len || stride < 2 || cdfs.len != n_tables * stride * 4 ||
        pos < 0 || pos > data.len / 4) {
        PyErr_SetString(PyExc_ValueError, "rANS decode: inconsistent buffer sizes");
        goto done;
    }
    for (Py_ssize_t t = 0; t < n_tables; ++t) {
        if (len[t] < 2 || len[t] > stride) {
            PyErr_SetString(PyExc_ValueError, "rANS decode: a table length is out of range");
            goto done;
        }
    }

    Cursor c = {(const uint32_t *)data.buf, data.len / 4, pos, state};
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; ++i) {
        const int32_t t = idx[i];
        if (t < 0 || t >= n_tables) { error = "a table index is out of range"; break; }
        const int32_t *row = cdf + (Py_ssize_t)t * stride;
        const int32_t max_value = len[t] - 2;
        const uint32_t cum = (uint32_t)(c.x & ((1u << PRECISION) - 1));
        int32_t s = 0;
        while (s + 1 < len[t] - 1 && (uint32_t)row[s + 1] <= cum) ++s;
        const uint32_t start = (uint32_t)row[s], freq = (uint32_t)(row[s + 1] - row[s]);
        if (freq == 0 || cum < start || cum >= start + freq) { error = "a table is not a CDF"; break; }
        c.x = freq * (c.x >> PRECISION) + (c.x & ((1u << PRECISION) - 1)) - start;
        if (refill(&c)) { error = "the string ends before its last symbol"; break; }
        int64_t value = s;
        if (s == max_value) {
            uint32_t digit, n_digits;
            if (get_bits(&c, &digit)) { error = "the string ends inside an escaped value"; break; }
            n_digits = digit;
            while (digit == BYPASS_MAX && n_digits <= MAX_BYPASS_DIGITS) {
                if (get_bits(&c, &digit)) { error = "the string ends inside an escaped value"; break; }
                n_digits += digit;
            }
            if (error) break;
            if (n_digits > MAX_BYPASS_DIGITS) { error = "an escaped value is too long"; break; }
            uint32_t raw = 0;
            for (uint32_t j = 0; j < n_digits; ++j) {
                if (get_bits(&c, &digit)) { error = "the string ends inside an escaped value"; break; }
                raw |= digit << (j * BYPASS_BITS);
            }
            if (error) break;
            value = (raw & 1) ? -(int64_t)(raw >> 1) - 1 : (int64_t)(raw >> 1) + max_value;
        }
        value += off[t];
        if (value < INT32_MIN || value > INT32_MAX) { error = "a symbol is out of range"; break; }
        dst[i] = (int32_t)value;
    }
    Py_END_ALLOW_THREADS

    if (error) {
        PyErr_Format(PyExc_ValueError, "malformed rANS data: %s", error);
        goto done;
    }
    result = Py_BuildValue("nK", c.pos, (unsigned long long)c.x);

done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&indexes);
    PyBuffer_Release(&cdfs);
    PyBuffer_Release(&lengths);
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&out);
    return result;
}

/* ---- encoder ----------------------------------------------------------------------------
 * The same format, written the way compressai's BufferedRansEncoder writes it (the symbols
 * pushed in order, escaped values as 4-bit digits after their symbol, then everything coded
 * in reverse and the 64-bit state flushed), with one addition: the state the encoder starts
 * from, which is the state the decoder must end in.  compressai always starts from 2^31;
 * featcodec's version-2 streams start from 2^31 + a 31-bit check of what the decoder must
 * reproduce, so a check costs no byte (the state grows by less than one bit).
 *
 *   encode(groups, state) -> bytes
 *
 * groups: a list of (symbols, indexes, cdfs, stride, lengths, offsets), int32 buffers as in
 * decode, coded one after another (the decoder reads them in this order); state: the initial
 * state, in [2^31, 2^32).
 */
typedef struct {
    uint32_t *words;
    Py_ssize_t n, cap;
} Words;

static int push_word(Words *w, uint32_t v) {
    if (w->n == w->cap) {
        Py_ssize_t cap = w->cap ? 2 * w->cap : 1024;
        uint32_t *grown = PyMem_Realloc(w->words, (size_t)cap * sizeof(uint32_t));
        if (!grown) return -1;
        w->words = grown;
        w->cap = cap;
    }
    w->words[w->n++] = v;
    return 0;
}

/* Rans64EncPut; the words come out last first */
static inline int put(uint64_t *x, Words *w, uint32_t start, uint32_t freq) {
    const uint64_t x_max = ((RANS_L >> PRECISION) << 32) * freq;
    if (*x >= x_max) {
        if (push_word(w, (uint32_t)*x)) return -1;
        *x >>= 32;
    }
    *x = ((*x / freq) << PRECISION) + (*x % freq) + start;
    return 0;
}

static inline int put_bits(uint64_t *x, Words *w, uint32_t value) {
    const uint64_t x_max = ((RANS_L >> BYPASS_BITS) << 32);
    if (*x >= x_max) {
        if (push_word(w, (uint32_t)*x)) return -1;
        *x >>= 32;
    }
    *x = (*x << BYPASS_BITS) | value;
    return 0;
}

typedef struct {
    Py_buffer symbols, indexes, cdfs, lengths, offsets;
    Py_ssize_t stride;
} Group;

static void release_group(Group *g) {
    PyBuffer_Release(&g->symbols);
    PyBuffer_Release(&g->indexes);
    PyBuffer_Release(&g->cdfs);
    PyBuffer_Release(&g->lengths);
    PyBuffer_Release(&g->offsets);
}

/* codes symbol i of group g (in reverse: its escape digits first); NULL or an error */
static const char *encode_symbol(const Group *g, Py_ssize_t i, uint64_t *x, Words *w) {
    const int32_t t = ((const int32_t *)g->indexes.buf)[i];
    const Py_ssize_t n_tables = g->lengths.len / 4;
    if (t < 0 || t >= n_tables) return "a table index is out of range";
    const int32_t *row = (const int32_t *)g->cdfs.buf + (Py_ssize_t)t * g->stride;
    const int32_t max_value = ((const int32_t *)g->lengths.buf)[t] - 2;
    int64_t value = (int64_t)((const int32_t *)g->symbols.buf)[i] -
                    ((const int32_t *)g->offsets.buf)[t];
    uint64_t raw = 0;
    int escaped = 0;
    if (value < 0) {
        raw = (uint64_t)(-2 * value - 1);
        value = max_value;
        escaped = 1;
    } else if (value >= max_value) {
        raw = (uint64_t)(2 * (value - max_value));
        value = max_value;
        escaped = 1;
    }
    if (raw >> 32) return "a symbol is out of range";
    if (escaped) {
        uint32_t digits[MAX_BYPASS_DIGITS + 4], n_digits = 0, count[4], n_count = 0;
        while ((raw >> (n_digits * BYPASS_BITS)) != 0) {
            digits[n_digits] = (uint32_t)(raw >> (n_digits * BYPASS_BITS)) & BYPASS_MAX;
            ++n_digits;
        }
        uint32_t rest = n_digits;
        while (rest >= BYPASS_MAX) { count[n_count++] = BYPASS_MAX; rest -= BYPASS_MAX; }
        count[n_count++] = rest;
        for (uint32_t j = n_digits; j-- > 0;)
            if (put_bits(x, w, digits[j])) return "out of memory";
        for (uint32_t j = n_count; j-- > 0;)
            if (put_bits(x, w, count[j])) return "out of memory";
    }
    const uint32_t start = (uint32_t)row[value], freq = (uint32_t)(row[value + 1] - row[value]);
    if (freq == 0) return "a symbol has probability zero in its table";
    if (put(x, w, start, freq)) return "out of memory";
    return NULL;
}

static PyObject *encode(PyObject *self, PyObject *args) {
    PyObject *groups_arg;
    unsigned long long state;
    if (!PyArg_ParseTuple(args, "OK", &groups_arg, &state)) return NULL;
    if (state < RANS_L || state >= (RANS_L << 1)) {
        PyErr_SetString(PyExc_ValueError, "rANS encode: the initial state is out of range");
        return NULL;
    }
    PyObject *seq = PySequence_Fast(groups_arg, "rANS encode: groups must be a sequence");
    if (!seq) return NULL;
    const Py_ssize_t n_groups = PySequence_Fast_GET_SIZE(seq);
    Group *groups = PyMem_Calloc((size_t)(n_groups ? n_groups : 1), sizeof(Group));
    Py_ssize_t parsed = 0;
    PyObject *result = NULL;
    const char *error = NULL;
    Words w = {NULL, 0, 0};
    if (!groups) { PyErr_NoMemory(); goto done; }
    for (; parsed < n_groups; ++parsed) {
        Group *g = &groups[parsed];
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, parsed), "y*y*y*ny*y*", &g->symbols,
                              &g->indexes, &g->cdfs, &g->stride, &g->lengths, &g->offsets))
            goto done;
        const Py_ssize_t n_tables = g->lengths.len / 4;
        if (g->symbols.len % 4 || g->indexes.len != g->symbols.len || g->lengths.len % 4 ||
            g->offsets.len != g->lengths.len || g->stride < 2 ||
            g->cdfs.len != n_tables * g->stride * 4) {
            ++parsed;
            PyErr_SetString(PyExc_ValueError, "rANS encode: inconsistent buffer sizes");
            goto done;
        }
        for (Py_ssize_t t = 0; t < n_tables; ++t) {
            const int32_t n = ((const int32_t *)g->lengths.buf)[t];
            if (n < 2 || n > g->stride) {
                ++parsed;
                PyErr_SetString(PyExc_ValueError, "rANS encode: a table length is out of range");
                goto done;
            }
        }
    }
    uint64_t x = state;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t k = n_groups; k-- > 0 && !error;)
        for (Py_ssize_t i = groups[k].symbols.len / 4; i-- > 0 && !error;)
            error = encode_symbol(&groups[k], i, &x, &w);
    if (!error && (push_word(&w, (uint32_t)(x >> 32)) || push_word(&w, (uint32_t)x)))
        error = "out of memory";
    Py_END_ALLOW_THREADS
    if (error) {
        PyErr_Format(PyExc_ValueError, "rANS encode: %s", error);
        goto done;
    }
    /* the words were produced last first */
    for (Py_ssize_t i = 0, j = w.n - 1; i < j; ++i, --j) {
        const uint32_t t = w.words[i];
        w.words[i] = w.words[j];
        w.words[j] = t;
    }
    result = PyBytes_FromStringAndSize((const char *)w.words, w.n * 4);

done:
    for (Py_ssize_t k = 0; k < parsed; ++k) release_group(&groups[k]);
    PyMem_Free(groups);
    PyMem_Free(w.words);
    Py_DECREF(seq);
    return result;
}

static PyMethodDef methods[] = {
    {"decode", decode, METH_VARARGS,
     "decode(data, pos, state, indexes, cdfs, stride, lengths, offsets, out) -> (pos, state)"},
    {"encode", encode, METH_VARARGS, "encode(groups, state) -> bytes"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "bounded_rans",
                                    "Bounds-checked rANS coding (see bounded_rans.c).", -1, methods};

PyMODINIT_FUNC PyInit_bounded_rans(void) { return PyModule_Create(&module); }
