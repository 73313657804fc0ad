/* Included in the typed section of trilinear.c and march.c (T, SUF and FN defined there; once per precision). */

/* Cell of the point x (index coordinates) per axis, cell[3], clamped as corner() clamps; 0 for a NaN point (the
occupancy tests of both files: a NaN point counts as occupied, it reads NaN). */
static inline int FN(cell_of)(const T* x3, int64_t n, int64_t* cell) {
    for (int a = 0; a < 3; ++a) {
        T x = x3[a];
        if (x != x) return 0;
        if (x < 0) x = 0;
        int64_t i = (int64_t)x; /* floor, x >= 0 */
        if (i > n - 2) i = n - 2;
        cell[a] = i;
    }
    return 1;
}

/* Cell (its lower node, cell[3]) and trilinear weights of the point x (index coordinates); 0 for a NaN point. Same
clamping as trilinear_corners: x into [0, n - 1], cell corner into [0, n - 2]. Corner k = 4a + 2b + c sits at
base + a n^2 + b n + c with weight (x: 1 - f | f)(y)(z). */
static inline int FN(corner)(const T* x3, int64_t n, int64_t* base, T* w, int64_t* cell) {
    int64_t c[3];
    T f[3];
    for (int a = 0; a < 3; ++a) {
        T x = x3[a];
        if (x != x) return 0;
        if (x < 0) x = 0;
        if (x > (T)(n - 1)) x = (T)(n - 1);
        int64_t i = (int64_t)x; /* floor, x >= 0 */
        if (i > n - 2) i = n - 2;
        c[a] = i;
        f[a] = x - (T)i;
    }
    *base = (c[0] * n + c[1]) * n + c[2];
    cell[0] = c[0];
    cell[1] = c[1];
    cell[2] = c[2];
    T gx = 1 - f[0], gy = 1 - f[1], gz = 1 - f[2];
    T xy[4] = {gx * gy, gx * f[1], f[0] * gy, f[0] * f[1]};
    for (int j = 0; j < 4; ++j) {
        w[2 * j] = xy[j] * gz;
        w[2 * j + 1] = xy[j] * f[2];
    }
    return 1;
}
