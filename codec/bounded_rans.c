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

static PyMethodDef methods[] = {
    {"decode", decode, METH_VARARGS,
     "decode(data, pos, state, indexes, cdfs, stride, lengths, offsets, out) -> (pos, state)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "bounded_rans",
                                    "Bounds-checked rANS decoding (see bounded_rans.c).", -1, methods};

PyMODINIT_FUNC PyInit_bounded_rans(void) { return PyModule_Create(&module); }
