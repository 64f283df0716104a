// xpnet's fused CUDA kernels (compiled by CuPy's RawModule once per floating type T).
//
// Each kernel computes what a sequence of array operations of xpnet/nn computes, in one
// pass over memory. The element-wise ones do the operations in the same order as the
// array code, and the module is compiled with --fmad=false (no fused multiply-add), so
// they round as the separate kernels would; the reductions sum in their own order.
// NaN propagates as in the array code: the training loop relies on a NaN loss.

#define GRID_STRIDE(i, n)                                                       \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); \
         i += (long long)blockDim.x * gridDim.x)

// The column of element i of a row-major array with C columns: in 32-bit arithmetic where
// i fits, as a 64-bit division costs several times a 32-bit one on the GPU.
__device__ __forceinline__ int column_of(long long i, int C) {
    return i <= 0xffffffffLL ? (int)((unsigned)i % (unsigned)C) : (int)(i % C);
}

// ---- activations --------------------------------------------------------------------
// relu: max(z, 0) keeping NaN; sigmoid: 1/(1+e) or e/(1+e), e = exp(-|z|);
// gelu: z Φ(z), Φ(z) = erfc(-z/√2)/2, z clipped below at -40 as in xpnet.nn.GELU.

__device__ __forceinline__ T relu_of(T z) { return (z > (T)0 || isnan(z)) ? z : (T)0; }

__device__ __forceinline__ T sigmoid_of(T z) {
    T e = exp(-fabs(z));
    T r = (T)1 / ((T)1 + e);
    return z >= (T)0 ? r : e * r;
}

__device__ __forceinline__ T clip_low(T z, T low) { return z < low ? low : z; }

__device__ __forceinline__ T clip(T z, T low, T high) {
    return z < low ? low : (z > high ? high : z);
}

// a[i] = f(z), kind: 0 identity, 1 relu, 2 sigmoid, 3 tanh, 4 gelu (which also writes z and
// Φ(z)). neg_sqrt1_2 is -1/sqrt(2.0) as xpnet.nn.GELU computes it in double (one ulp from
// the correctly rounded constant; erfc's tail multiplies that difference by 2z²).
__device__ __forceinline__ void activate(T z, long long i, int kind, T neg_sqrt1_2, T* a,
                                         T* z_out, T* cdf) {
    switch (kind) {
        case 0: a[i] = z; break;
        case 1: a[i] = relu_of(z); break;
        case 2: a[i] = sigmoid_of(z); break;
        case 3: a[i] = tanh(z); break;
        default: {
            T c = (T)0.5 * erfc(neg_sqrt1_2 * z);
            z_out[i] = z;
            cdf[i] = c;
            a[i] = clip_low(z, (T)(-40)) * c;
        }
    }
}

// a = f(x + b[j]) for an (n / C, C) row-major x; without a bias (has_bias = 0), a = f(x).
extern "C" __global__ void bias_activation(const T* x, const T* b, T* a, T* z_out, T* cdf,
                                           long long n, int C, int has_bias, int kind,
                                           T neg_sqrt1_2) {
    GRID_STRIDE(i, n) {
        T z = has_bias ? x[i] + b[column_of(i, C)] : x[i];
        activate(z, i, kind, neg_sqrt1_2, a, z_out, cdf);
    }
}

// da * f'(z) at element i, from the cached output a (relu, sigmoid, tanh) or z and Φ(z)
// (gelu); da itself for the identity.
__device__ __forceinline__ T activation_grad(const T* da, const T* a, const T* z,
                                             const T* cdf, long long i, int kind,
                                             T inv_sqrt_2pi) {
    switch (kind) {
        case 0: return da[i];
        case 1: return da[i] * (T)(a[i] > (T)0);
        case 2: return da[i] * (a[i] * ((T)1 - a[i]));
        case 3: return da[i] * ((T)1 - a[i] * a[i]);
        default: {
            T zc = clip(z[i], (T)(-40), (T)40);
            T pdf = inv_sqrt_2pi * exp((T)(-0.5) * (zc * zc));
            return da[i] * (cdf[i] + zc * pdf);
        }
    }
}

// dz = da * f'(z).
extern "C" __global__ void activation_backward(const T* da, const T* a, const T* z,
                                               const T* cdf, T* dz, long long n, int kind,
                                               T inv_sqrt_2pi) {
    GRID_STRIDE(i, n) dz[i] = activation_grad(da, a, z, cdf, i, kind, inv_sqrt_2pi);
}

// ---- column reductions in two steps ------------------------------------------------------
// column_partials: a block of 32 x ROWS threads sums 32 columns over one chunk of the rows
// (chunk blockIdx.y of gridDim.y), so a wide batch keeps every multiprocessor busy; the
// final kernels then add each column's chunk sums in chunk order. The chunks depend on
// the shape alone, so a result does too (eager and captured steps agree bit for bit).
#define ROWS 8

// The block's sum over its ROWS partial sums of column threadIdx.x, in shared memory.
__device__ __forceinline__ T column_total(T (*shared)[33], T partial) {
    shared[threadIdx.y][threadIdx.x] = partial;
    __syncthreads();
    T total = (T)0;
    for (int k = 0; k < ROWS; ++k) total += shared[k][threadIdx.x];
    __syncthreads();
    return total;
}

// partial[k, j] = Σ X[r, j] / divisor over the rows r of chunk k of an (N, C) X: column
// sums (bias gradients, the loss mean), the divisor 1 for chunks that column_totals adds up.
extern "C" __global__ void column_partials(const T* X, long long N, int C, T divisor,
                                           T* partial) {
    __shared__ T shared[ROWS][33];
    int j = blockIdx.x * 32 + threadIdx.x;
    int k = blockIdx.y, chunks = gridDim.y;
    T s0 = (T)0;
    if (j < C) {
        long long first = N * k / chunks, last = N * (k + 1) / chunks;
        for (long long r = first + threadIdx.y; r < last; r += ROWS) s0 += X[r * C + j];
    }
    s0 = column_total(shared, s0);
    if (j < C && threadIdx.y == 0) partial[(long long)k * C + j] = s0 / divisor;
}

// activation_backward of an (N, C) da in column_partials' layout, with the chunks' column
// sums of dz in partial (a Linear layer's bias gradient, in the same order as
// column_partials over dz): one pass instead of a write and a read of dz.
extern "C" __global__ void activation_backward_columns(const T* da, const T* a, const T* z,
                                                       const T* cdf, T* dz, long long N,
                                                       int C, int kind, T inv_sqrt_2pi,
                                                       T* partial) {
    __shared__ T shared[ROWS][33];
    int j = blockIdx.x * 32 + threadIdx.x;
    int k = blockIdx.y, chunks = gridDim.y;
    T s0 = (T)0;
    if (j < C) {
        long long first = N * k / chunks, last = N * (k + 1) / chunks;
        for (long long r = first + threadIdx.y; r < last; r += ROWS) {
            long long i = r * C + j;
            T g = activation_grad(da, a, z, cdf, i, kind, inv_sqrt_2pi);
            dz[i] = g;
            s0 += g;
        }
    }
    s0 = column_total(shared, s0);
    if (j < C && threadIdx.y == 0) partial[(long long)k * C + j] = s0;
}

// Chan's update of the count n, mean and sum of squared deviations m2 of a set of values
// by those of another set (nb values, mean_b, m2_b); with n = 0 it gives the other's exactly.
__device__ __forceinline__ void merge_moments(long long& n, T& mean, T& m2, long long nb,
                                              T mean_b, T m2_b) {
    long long total = n + nb;
    T delta = mean_b - mean;
    T weight = (T)nb / (T)total;
    mean = mean + delta * weight;
    m2 = m2 + m2_b + delta * delta * ((T)n * weight);
    n = total;
}

// The shift of column j's values in column_moments: its first value (0 without rows).
__device__ __forceinline__ T moment_shift(const T* X, const T* b, long long N, int C, int j,
                                          int has_bias) {
    if (N == 0) return (T)0;
    return has_bias ? X[j] + b[j] : X[j];
}

// BatchNorm's statistics in one pass over the rows of chunk k of an (N, C) X, with
// y = X[r, j] (+ b[j] where has_bias) - s_j, s_j the column's first value: each thread keeps
// the mean and the sum of squared deviations of its y (Welford), the block merges its ROWS
// threads in order, and partial[k, j] = the chunk's mean of y, partial[chunks + k, j] = its
// sum of squared deviations. No sum of squares is formed, and the shift keeps the running
// means at the scale of the spread, not of the values: a mean of 1e4 with a spread of 1e-2
// loses no more in float32 than two passes do.
extern "C" __global__ void column_moments(const T* X, const T* b, long long N, int C,
                                          int has_bias, T* partial) {
    __shared__ T shared_mean[ROWS][33];
    __shared__ T shared_m2[ROWS][33];
    int j = blockIdx.x * 32 + threadIdx.x;
    int k = blockIdx.y, chunks = gridDim.y;
    bool live = j < C;
    long long first = N * k / chunks, last = N * (k + 1) / chunks;
    T mean = (T)0, m2 = (T)0;
    if (live) {
        T bias = has_bias ? b[j] : (T)0;
        T shift = moment_shift(X, b, N, C, j, has_bias);
        long long count = 0;
        for (long long r = first + threadIdx.y; r < last; r += ROWS) {
            long long i = r * C + j;
            T z = (has_bias ? X[i] + bias : X[i]) - shift;
            count += 1;
            T delta = z - mean;
            mean = mean + delta / (T)count;
            m2 = m2 + delta * (z - mean);
        }
    }
    shared_mean[threadIdx.y][threadIdx.x] = mean;
    shared_m2[threadIdx.y][threadIdx.x] = m2;
    __syncthreads();
    if (live && threadIdx.y == 0) {
        long long rows = last - first, n = 0;
        T chunk_mean = (T)0, chunk_m2 = (T)0;
        for (int t = 0; t < ROWS && t < rows; ++t)  // thread t took rows t, t + ROWS, ...
            merge_moments(n, chunk_mean, chunk_m2, (rows - t + ROWS - 1) / ROWS,
                          shared_mean[t][threadIdx.x], shared_m2[t][threadIdx.x]);
        partial[(long long)k * C + j] = chunk_mean;
        partial[(long long)(chunks + k) * C + j] = chunk_m2;
    }
}

// out[g, j] = (Σ_k partial[g, k, j]) / divisor for g < groups: the chunks' sums, in order.
extern "C" __global__ void column_totals(const T* partial, int chunks, int C, int groups,
                                         T divisor, T* out) {
    GRID_STRIDE(i, (long long)groups * C) {
        long long g = i / C, j = i % C;
        T total = (T)0;
        for (int k = 0; k < chunks; ++k) total += partial[(g * chunks + k) * C + j];
        out[i] = total / divisor;
    }
}

// BatchNorm's statistics from column_moments' chunks, merged in chunk order: M (the shift
// added back), V (biased, m2 / N), inv_std = 1/sqrt(V + eps), and the running statistics
// updated in place to alpha * running + (1 - alpha) * batch. No rows (N = 0) give NaN, as
// the array code's mean of no rows.
extern "C" __global__ void batchnorm_statistics(const T* partial, const T* X, const T* b,
                                                int has_bias, int chunks, int C, long long N,
                                                T* M, T* V, T* inv_std, T* run_M, T* run_V,
                                                T alpha, T one_minus_alpha, T eps) {
    GRID_STRIDE(j, C) {
        long long n = 0;
        T mean = (T)0, m2 = (T)0;
        for (int k = 0; k < chunks; ++k) {
            long long rows = N * (k + 1) / chunks - N * k / chunks;
            if (rows > 0)
                merge_moments(n, mean, m2, rows, partial[(long long)k * C + j],
                              partial[(long long)(chunks + k) * C + j]);
        }
        T var = m2 / (T)N;
        mean = N == 0 ? var : mean + moment_shift(X, b, N, C, (int)j, has_bias);
        M[j] = mean;
        V[j] = var;
        inv_std[j] = (T)1 / sqrt(var + eps);
        run_M[j] = alpha * run_M[j] + one_minus_alpha * mean;
        run_V[j] = alpha * run_V[j] + one_minus_alpha * var;
    }
}

// z = Z (+ b[j] where has_bias), NZ = (z - M) * inv_std and BZ = BW * NZ + Bb, per column j;
// then with kind >= 0 the activation of BZ into A (and, for gelu, BZ into z_out with Φ
// into cdf), BZ itself unwritten unless kind < 0.
extern "C" __global__ void batchnorm_apply(const T* Z, const T* b, const T* M,
                                           const T* inv_std, const T* BW, const T* Bb, T* NZ,
                                           T* BZ, T* A, T* cdf, long long n, int C,
                                           int has_bias, int kind, T neg_sqrt1_2) {
    GRID_STRIDE(i, n) {
        int j = column_of(i, C);
        T z = has_bias ? Z[i] + b[j] : Z[i];
        T nz = (z - M[j]) * inv_std[j];
        NZ[i] = nz;
        T bz = BW[j] * nz + Bb[j];
        if (kind < 0)
            BZ[i] = bz;
        else
            activate(bz, i, kind, neg_sqrt1_2, A, BZ, cdf);
    }
}

// BatchNorm's backward, with the activation after it folded in (kind 0: none), in
// column_partials' layout: g = activation_grad(da, ...) (dLdBZ, never written out), and
//   batchnorm_backward_partials: partial[k, j] = Σ g NZ, partial[chunks + k, j] = Σ g over
//       chunk k (dLdBW and dLdBb once the chunks are added);
//   batchnorm_backward_columns: dZ = (g - sum_b / N - NZ * (sum_w / N)) * (BW * inv_std),
//       the exact batch gradient, and partial[k, j] = Σ dZ over chunk k (the bias gradient
//       of the Linear layer before, as column_partials over dZ).
extern "C" __global__ void batchnorm_backward_partials(const T* da, const T* a, const T* z,
                                                       const T* cdf, const T* NZ, long long N,
                                                       int C, int kind, T inv_sqrt_2pi,
                                                       T* partial) {
    __shared__ T shared[ROWS][33];
    int j = blockIdx.x * 32 + threadIdx.x;
    int k = blockIdx.y, chunks = gridDim.y;
    T s0 = (T)0, s1 = (T)0;
    if (j < C) {
        long long first = N * k / chunks, last = N * (k + 1) / chunks;
        for (long long r = first + threadIdx.y; r < last; r += ROWS) {
            long long i = r * C + j;
            T g = activation_grad(da, a, z, cdf, i, kind, inv_sqrt_2pi);
            s0 += g * NZ[i];
            s1 += g;
        }
    }
    s0 = column_total(shared, s0);
    s1 = column_total(shared, s1);
    if (j < C && threadIdx.y == 0) {
        partial[(long long)k * C + j] = s0;
        partial[(long long)(chunks + k) * C + j] = s1;
    }
}

extern "C" __global__ void batchnorm_backward_columns(const T* da, const T* a, const T* z,
                                                      const T* cdf, const T* NZ,
                                                      const T* sum_w, const T* sum_b,
                                                      const T* BW, const T* inv_std, T* dZ,
                                                      long long N, int C, int kind,
                                                      T inv_sqrt_2pi, T rows, T* partial) {
    __shared__ T shared[ROWS][33];
    int j = blockIdx.x * 32 + threadIdx.x;
    int k = blockIdx.y, chunks = gridDim.y;
    T s0 = (T)0;
    if (j < C) {
        long long first = N * k / chunks, last = N * (k + 1) / chunks;
        T mean_b = sum_b[j] / rows, mean_w = sum_w[j] / rows, scale = BW[j] * inv_std[j];
        for (long long r = first + threadIdx.y; r < last; r += ROWS) {
            long long i = r * C + j;
            T g = activation_grad(da, a, z, cdf, i, kind, inv_sqrt_2pi);
            T d = (g - mean_b - NZ[i] * mean_w) * scale;
            dZ[i] = d;
            s0 += d;
        }
    }
    s0 = column_total(shared, s0);
    if (j < C && threadIdx.y == 0) partial[(long long)k * C + j] = s0;
}

// ---- softmax cross-entropy: one block of XENT_THREADS threads per row ------------------
#define XENT_THREADS 128

__device__ __forceinline__ T block_max(T* shared, T v) {
    shared[threadIdx.x] = v;
    __syncthreads();
    for (int k = XENT_THREADS / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) {
            T other = shared[threadIdx.x + k];
            T mine = shared[threadIdx.x];
            shared[threadIdx.x] = (other > mine || isnan(other)) ? other : mine;
        }
        __syncthreads();
    }
    T result = shared[0];
    __syncthreads();
    return result;
}

__device__ __forceinline__ T block_sum(T* shared, T v) {
    shared[threadIdx.x] = v;
    __syncthreads();
    for (int k = XENT_THREADS / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) shared[threadIdx.x] += shared[threadIdx.x + k];
        __syncthreads();
    }
    T result = shared[0];
    __syncthreads();
    return result;
}

// For row n of (N, C) logits A with label y[n]: S = softmax(A[n]),
// row_loss[n] = log Σ_c exp(A[n,c] - m) - (A[n,y] - m), m the row's maximum, and
// G = (S - onehot(y)) / N, the gradient of the mean loss (written with S: no second pass).
extern "C" __global__ void cross_entropy_rows(const T* A, const long long* y, T* S, T* row_loss,
                                              T* G, int C, T N) {
    __shared__ T shared[XENT_THREADS];
    long long row = blockIdx.x;
    const T* a = A + row * C;
    T* s = S + row * C;
    T* g = G + row * C;
    long long label = y[row];  // checked by the caller; a NaN loss rather than a bad read
    T m = a[0];  // every row has C >= 1 values
    for (int c = threadIdx.x; c < C; c += XENT_THREADS)
        m = (a[c] > m || isnan(a[c])) ? a[c] : m;
    m = block_max(shared, m);
    T t = (T)0;
    for (int c = threadIdx.x; c < C; c += XENT_THREADS) {
        T e = exp(a[c] - m);
        s[c] = e;
        t += e;
    }
    t = block_sum(shared, t);
    for (int c = threadIdx.x; c < C; c += XENT_THREADS) {
        T p = s[c] / t;
        s[c] = p;
        g[c] = (p - (T)(c == label)) / N;
    }
    if (threadIdx.x == 0)
        row_loss[row] = (label >= 0 && label < C) ? log(t) - (a[label] - m) : (T)nan("");
}

// hits[row] = 1 where the row's largest logit (the first of equal ones; NaN counts as the
// largest, as in NumPy's argmax) is at its label, else 0: the right predictions of a batch.
extern "C" __global__ void argmax_hits(const T* A, const long long* y, T* hits, int C) {
    __shared__ T best[XENT_THREADS];
    __shared__ int where[XENT_THREADS];
    long long row = blockIdx.x;
    const T* a = A + row * C;
    T m = a[0];
    int at = 0;
    for (int c = threadIdx.x; c < C; c += XENT_THREADS) {
        T v = a[c];
        if (!isnan(m) && (v > m || isnan(v))) {
            m = v;
            at = c;
        }
    }
    best[threadIdx.x] = m;
    where[threadIdx.x] = at;
    __syncthreads();
    for (int k = XENT_THREADS / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) {
            T v = best[threadIdx.x + k], mine = best[threadIdx.x];
            int j = where[threadIdx.x + k], i = where[threadIdx.x];
            bool take = isnan(mine) ? (isnan(v) && j < i)
                                    : (isnan(v) || v > mine || (v == mine && j < i));
            if (take) {
                best[threadIdx.x] = v;
                where[threadIdx.x] = j;
            }
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) hits[row] = (T)(where[0] == y[row]);
}

// ---- SGD with momentum, weight decay and Nesterov over the flat parameter array ---------
// The same operations, in the same order, as xpnet.optim.SGD's flat update:
// g += wd * p; v = v * mu + g; g = nesterov ? g + mu * v : v; p -= lr * g.
__device__ __forceinline__ void sgd_element(T* P, T* V, long long i, T g, T lr, T mu, T wd,
                                            int has_wd, int has_mu, int nesterov) {
    T p = P[i];
    if (has_wd) g = g + wd * p;
    if (has_mu) {
        T v = V[i] * mu;
        v = v + g;
        V[i] = v;
        g = nesterov ? g + mu * v : v;
    }
    P[i] = p - lr * g;
}

// Up to 8 parameters in one launch, each with its own gradient array:
// gradient k holds the elements [e_{k-1}, e_k) of P + first and V + first (e_{-1} = 0); the
// slots after the last parameter repeat its end (and any gradient, never read).
extern "C" __global__ void sgd_update_group(T* P, T* V, long long first, const T* g0,
                                            const T* g1, const T* g2, const T* g3, const T* g4,
                                            const T* g5, const T* g6, const T* g7, long long e0,
                                            long long e1, long long e2, long long e3,
                                            long long e4, long long e5, long long e6,
                                            long long e7, T lr, T mu, T wd, int has_wd,
                                            int has_mu, int nesterov) {
    GRID_STRIDE(i, e7) {
        T g;
        if (i < e3) {
            if (i < e1) g = i < e0 ? g0[i] : g1[i - e0];
            else g = i < e2 ? g2[i - e1] : g3[i - e2];
        } else {
            if (i < e5) g = i < e4 ? g4[i - e3] : g5[i - e4];
            else g = i < e6 ? g6[i - e5] : g7[i - e6];
        }
        sgd_element(P, V, first + i, g, lr, mu, wd, has_wd, has_mu, nesterov);
    }
}
