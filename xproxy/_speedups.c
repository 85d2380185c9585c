/* The framer's inner loop in C: skip the whole requests that pass through untouched.
 *
 * xproxy.x11.framing has the same function in Python (py_skip_requests), which is
 * what runs when this module was not built; tests check that the two agree. A client
 * that sends many small requests per write (x11perf -noop: 4096 NoOperations in 16 KB)
 * otherwise costs the proxy a Python loop turn per request.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

PyDoc_STRVAR(skip_requests_doc,
"skip_requests(buf, pos, end, holds, little, counts=None) -> (pos, count)\n\n"
"Walk the requests that start at buf[pos], up to buf[end], while each has a nonzero\n"
"16-bit length and holds[opcode] is 0. Returns the offset where the walk stopped\n"
"(past `end` when the last request counted is not all there yet) and how many requests\n"
"it walked. Stops at a request it must not walk (held, or length 0: BIG-REQUESTS) and\n"
"at a header that is not all there. With `counts` (a writable buffer of 256 native\n"
"unsigned 64-bit integers, such as array('Q')), adds one to counts[opcode] for each\n"
"request walked.");

static PyObject *
skip_requests(PyObject *self, PyObject *args)
{
    Py_buffer buf, holds, counts = {NULL, NULL};
    Py_ssize_t pos, end, count = 0;
    int little;
    PyObject *counts_obj = Py_None;

    if (!PyArg_ParseTuple(args, "y*nny*p|O", &buf, &pos, &end, &holds, &little, &counts_obj))
        return NULL;
    if (counts_obj != Py_None &&
        PyObject_GetBuffer(counts_obj, &counts, PyBUF_WRITABLE | PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&buf);
        PyBuffer_Release(&holds);
        return NULL;
    }
    if (holds.len != 256 || pos < 0 || end < pos || end > buf.len ||
        (counts.obj != NULL &&
         (counts.len != 256 * (Py_ssize_t)sizeof(unsigned long long) ||
          counts.itemsize != (Py_ssize_t)sizeof(unsigned long long) ||
          counts.format == NULL || strcmp(counts.format, "Q") != 0))) {
        PyBuffer_Release(&buf);
        PyBuffer_Release(&holds);
        if (counts.obj != NULL)
            PyBuffer_Release(&counts);
        PyErr_SetString(PyExc_ValueError,
                        "skip_requests: holds must be 256 bytes, counts 256 'Q' items, "
                        "and pos <= end <= len(buf)");
        return NULL;
    }
    const unsigned char *b = (const unsigned char *)buf.buf;
    const unsigned char *h = (const unsigned char *)holds.buf;
    unsigned long long *c = (unsigned long long *)counts.buf;
    while (end - pos >= 4) {
        unsigned int length = little ? (unsigned int)(b[pos + 2] | (b[pos + 3] << 8))
                                     : (unsigned int)((b[pos + 2] << 8) | b[pos + 3]);
        if (length == 0 || h[b[pos]])
            break;
        if (c != NULL)
            c[b[pos]]++;
        count++;
        pos += (Py_ssize_t)length * 4;
    }
    PyBuffer_Release(&buf);
    PyBuffer_Release(&holds);
    if (counts.obj != NULL)
        PyBuffer_Release(&counts);
    return Py_BuildValue("nn", pos, count);
}

static PyMethodDef methods[] = {
    {"skip_requests", skip_requests, METH_VARARGS, skip_requests_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "xproxy._speedups",
    "The framer's inner loop in C (see xproxy.x11.framing).", -1, methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&module);
}
