// CUDA kernels of the CuPy backend (backprop/backends/cupy.py).
//
// Compiled at run time by NVRTC through cupy.RawModule(name_expressions=[...]): each kernel is
// a template over the float type T and is instantiated for float and double by its name
// expression ("bias_activation<float>", ...); the list lives in cupy.py (NAME_EXPRESSIONS).
// No #include: NVRTC has no standard headers, the CUDA math functions are built in.
//
// Layout: row-major (C-contiguous) arrays; a batch has `rows` samples of `cols` units.
// The integer codes are those of backprop/activations.py (Code), backprop/losses.py and
// backprop/optimizers.py. Elementwise kernels use grid-stride loops. Every reduction sums in
// an order fixed by the shapes alone (the loss in one block of REDUCE_THREADS threads, the
// gradient norm over per-block partials, split-K partials in split order), so results are
// deterministic: identical with and without CUDA graphs.

enum { IDENTITY = 0, SIGMOID = 1, TANH = 2, RELU = 3, LEAKY_RELU = 4, ELU = 5, SOFTMAX = 6 };
enum { MSE = 0, BINARY_CROSS_ENTROPY = 1, CROSS_ENTROPY = 2 };
enum { SGD = 0, MOMENTUM = 1, RMSPROP = 2, ADAM = 3 };

#define REDUCE_THREADS 256
#define MM_BM 64          // matmul: rows of C per block
#define MM_BN 64          // matmul: columns of C per block
#define MM_BK 16          // matmul: k per shared-memory slab
#define MM_THREADS 256    // matmul: threads per block (16 × 16)

#define GRID_STRIDE(i, n)                                                             \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n);       \
         i += (long long)blockDim.x * gridDim.x)

// ---------------------------------------------------------------- activations

// σ(z) for an elementwise activation (softmax is the row kernel bias_softmax).
template <typename T>
__device__ T activate(T z, int code, T alpha) {
    switch (code) {
        case SIGMOID: return T(0.5) * tanh(z * T(0.5)) + T(0.5);   // ½ (1 + tanh(z/2))
        case TANH: return tanh(z);
        case RELU: return z > T(0) ? z : T(0);
        case LEAKY_RELU: return z < T(0) ? alpha * z : z;
        case ELU: return z > T(0) ? z : alpha * expm1(z);
        default: return z;                                          // identity
    }
}

// σ'(z) written in terms of a = σ(z) (exact for every elementwise activation).
template <typename T>
__device__ T derivative(T a, int code, T alpha) {
    switch (code) {
        case SIGMOID: return a * (T(1) - a);
        case TANH: return T(1) - a * a;
        case RELU: return a > T(0) ? T(1) : T(0);
        case LEAKY_RELU: return a > T(0) ? T(1) : alpha;
        case ELU: return a > T(0) ? T(1) : a + alpha;
        default: return T(1);                                       // identity
    }
}

// Z[r, c] += b[c]; A = σ(Z). Z may equal A. n = rows * cols.
template <typename T>
__global__ void bias_activation(const T* b, T* Z, T* A, long long n, long long cols,
                                int code, T alpha) {
    GRID_STRIDE(i, n) {
        T z = Z[i] + b[i % cols];
        Z[i] = z;
        A[i] = activate(z, code, alpha);
    }
}

// Z[r, :] += b; A[r, :] = exp(Z[r, :] - max) / Σ exp(Z[r, :] - max). One thread per row.
template <typename T>
__global__ void bias_softmax(const T* b, T* Z, T* A, long long rows, long long cols) {
    GRID_STRIDE(r, rows) {
        T* z = Z + r * cols;
        T* a = A + r * cols;
        T top = z[0] + b[0];
        for (long long c = 0; c < cols; ++c) {
            T v = z[c] + b[c];
            z[c] = v;
            top = v > top ? v : top;
        }
        T sum = T(0);
        for (long long c = 0; c < cols; ++c) {
            a[c] = exp(z[c] - top);
            sum += a[c];
        }
        for (long long c = 0; c < cols; ++c) a[c] = a[c] / sum;
    }
}

// out = G ⊙ σ'(a), elementwise activations; out may be G. n = rows * cols.
template <typename T>
__global__ void activation_backward(const T* G, const T* A, T* out, long long n, int code,
                                    T alpha) {
    GRID_STRIDE(i, n) out[i] = G[i] * derivative(A[i], code, alpha);
}

// Softmax Jacobian product per row: out = scale · a ⊙ (G - Σ_j G_j a_j); out may be G. One
// thread per row.
template <typename T>
__global__ void softmax_backward(const T* G, const T* A, T* out, long long rows,
                                 long long cols, T scale) {
    GRID_STRIDE(r, rows) {
        const T* g = G + r * cols;
        const T* a = A + r * cols;
        T* o = out + r * cols;
        T dot = T(0);
        for (long long c = 0; c < cols; ++c) dot += g[c] * a[c];
        for (long long c = 0; c < cols; ++c) o[c] = (g[c] - dot) * a[c] * scale;
    }
}

// δ_L = (ŷ - y) ⊙ σ'(a) / B, or (ŷ - y) / B when `fused` (the seeds' simplified pairs).
// With sample weights (`weight`, one per row, not null) row r is scaled by
// weight[r] · weight_norm[0] instead of inv_batch, weight_norm[0] = 1 / Σ w (weight_norm).
template <typename T>
__global__ void output_delta(const T* A, const T* Y, T* delta, long long n, long long cols,
                             int code, T alpha, int fused, T inv_batch, const T* weight,
                             const T* weight_norm) {
    const T norm = weight ? weight_norm[0] : T(0);
    GRID_STRIDE(i, n) {
        T g = A[i] - Y[i];
        if (!fused) g = g * derivative(A[i], code, alpha);
        delta[i] = g * (weight ? weight[i / cols] * norm : inv_batch);
    }
}

// ---------------------------------------------------------------- batch normalization

// The running averages of column c move towards the batch mean m and the unbiased variance
// q / (rows - 1) (rows = 1: q, the biased one), q = Σ_r (Z - m)²; momentum 0 leaves them.
template <typename T>
__device__ void batch_norm_running(T* running_mean, T* running_var, long long c, double m,
                                   double q, long long rows, T momentum) {
    if (momentum != T(0)) {
        const double k = (double)momentum;
        const double unbiased = rows > 1 ? q / (double)(rows - 1) : q / (double)rows;
        running_mean[c] = (T)((1.0 - k) * (double)running_mean[c] + k * m);
        running_var[c] = (T)((1.0 - k) * (double)running_var[c] + k * unbiased);
    }
}

// Batch normalization, step 1: the statistics of each column c, one thread per column (the
// threads of a warp read consecutive columns of a row: coalesced), summed in double in row
// order (deterministic). train: mean = Σ_r Z / rows, var = Σ_r (Z - mean)² / rows (two
// passes), and the running averages moved (batch_norm_running); else mean, var = the running
// averages. Then inv_std = 1 / √(var + eps).
template <typename T>
__global__ void batch_norm_stats(const T* Z, T* running_mean, T* running_var, T* mean,
                                 T* inv_std, long long rows, long long cols, int train,
                                 T momentum, T eps) {
    GRID_STRIDE(c, cols) {
        double m, v;
        if (train) {
            double s = 0.0;
            for (long long r = 0; r < rows; ++r) s += (double)Z[r * cols + c];
            m = (double)(T)(s / (double)rows);         // the mean Zhat is centred with
            double q = 0.0;
            for (long long r = 0; r < rows; ++r) {
                const double d = (double)Z[r * cols + c] - m;
                q += d * d;
            }
            v = q / (double)rows;
            batch_norm_running(running_mean, running_var, c, m, q, rows, momentum);
        } else {
            m = (double)running_mean[c];
            v = (double)running_var[c];
        }
        mean[c] = (T)m;
        inv_std[c] = (T)(1.0 / sqrt(v + (double)eps));
    }
}

// A batch split across processes (backprop.distributed), one thread per column, in double in
// row order: out = Σ_r Z (center null), else Σ_r (Z - center)²: one process's part.
template <typename T>
__global__ void batch_norm_sums(const T* Z, const T* center, T* out, long long rows,
                                long long cols) {
    GRID_STRIDE(c, cols) {
        double s = 0.0;
        if (center) {
            const double m = (double)center[c];
            for (long long r = 0; r < rows; ++r) {
                const double d = (double)Z[r * cols + c] - m;
                s += d * d;
            }
        } else {
            for (long long r = 0; r < rows; ++r) s += (double)Z[r * cols + c];
        }
        out[c] = (T)s;
    }
}

// ... then, from the global batch's mean and squares = Σ (Z - mean)² over its rows: the
// running averages moved and inv_std = 1 / √(squares / rows + eps). inv_std may be squares.
template <typename T>
__global__ void batch_norm_finish(const T* mean, const T* squares, T* running_mean,
                                  T* running_var, T* inv_std, long long rows, long long cols,
                                  T momentum, T eps) {
    GRID_STRIDE(c, cols) {
        const double q = (double)squares[c];
        batch_norm_running(running_mean, running_var, c, (double)mean[c], q, rows, momentum);
        inv_std[c] = (T)(1.0 / sqrt(q / (double)rows + (double)eps));
    }
}

// Batch normalization, step 2, elementwise: Zhat = (Z - mean) · inv_std and
// A = σ(gamma · Zhat + beta) per column c = i % cols (beta null: A = gamma · Zhat, for
// softmax, whose bias_softmax launch adds beta). Zhat may be Z. n = rows * cols.
template <typename T>
__global__ void batch_norm_apply(const T* Z, const T* mean, const T* inv_std, const T* gamma,
                                 const T* beta, T* Zhat, T* A, long long n, long long cols,
                                 int code, T alpha) {
    GRID_STRIDE(i, n) {
        const long long c = i % cols;
        const T zhat = (Z[i] - mean[c]) * inv_std[c];
        Zhat[i] = zhat;
        A[i] = activate(gamma[c] * zhat + (beta ? beta[c] : T(0)), code, alpha);
    }
}

// ∂L/∂Z of one element: k · (g - mean(G) - zhat · mean(G ⊙ Zhat)), k = gamma · inv_std.
__device__ inline double batch_norm_grad(double k, double g, double zhat, double mg, double mgz) {
    return k * (g - mg - zhat * mgz);
}

// dbeta[c] = sg = Σ_r G[r, c] and dgamma[c] = sgz = Σ_r G[r, c] · Zhat[r, c] of column c,
// summed in double, in row order.
template <typename T>
__device__ void batch_norm_column_sums(const T* G, const T* Zhat, long long rows,
                                       long long cols, long long c, T* dgamma, T* dbeta,
                                       double& sg, double& sgz) {
    sg = 0.0;
    sgz = 0.0;
    for (long long r = 0; r < rows; ++r) {
        const double g = (double)G[r * cols + c];
        sg += g;
        sgz += g * (double)Zhat[r * cols + c];
    }
    dbeta[c] = (T)sg;
    dgamma[c] = (T)sgz;
}

// The backward pass of batch normalization through the batch statistics, one thread per
// column c (sums in double, in row order): dbeta = Σ_r G, dgamma = Σ_r G ⊙ Zhat,
// out = gamma · inv_std · (G - dbeta / rows - Zhat · dgamma / rows). out may be G.
template <typename T>
__global__ void batch_norm_backward(const T* G, const T* Zhat, const T* gamma,
                                    const T* inv_std, T* dgamma, T* dbeta, T* out,
                                    long long rows, long long cols) {
    GRID_STRIDE(c, cols) {
        double sg, sgz;
        batch_norm_column_sums(G, Zhat, rows, cols, c, dgamma, dbeta, sg, sgz);
        const double k = (double)gamma[c] * (double)inv_std[c];
        const double mg = sg / (double)rows, mgz = sgz / (double)rows;
        for (long long r = 0; r < rows; ++r) {
            const long long i = r * cols + c;
            out[i] = (T)batch_norm_grad(k, (double)G[i], (double)Zhat[i], mg, mgz);
        }
    }
}

// The same taken apart for a batch split across processes: first each process's sums
// (dbeta = Σ_r G, dgamma = Σ_r G ⊙ Zhat, one thread per column) ...
template <typename T>
__global__ void batch_norm_backward_sums(const T* G, const T* Zhat, T* dgamma, T* dbeta,
                                         long long rows, long long cols) {
    GRID_STRIDE(c, cols) {
        double sg, sgz;
        batch_norm_column_sums(G, Zhat, rows, cols, c, dgamma, dbeta, sg, sgz);
    }
}

// ... then, elementwise with the global batch's sums and its row count `rows`, ∂L/∂Z
// (n = this process's rows · cols elements). out may be G.
template <typename T>
__global__ void batch_norm_backward_apply(const T* G, const T* Zhat, const T* gamma,
                                          const T* inv_std, const T* dgamma, const T* dbeta,
                                          T* out, long long n, long long cols, long long rows) {
    GRID_STRIDE(i, n) {
        const long long c = i % cols;
        const double k = (double)gamma[c] * (double)inv_std[c];
        out[i] = (T)batch_norm_grad(k, (double)G[i], (double)Zhat[i],
                                    (double)dbeta[c] / (double)rows,
                                    (double)dgamma[c] / (double)rows);
    }
}

// out = x + y (a residual connection); out may be x.
template <typename T>
__global__ void add(const T* x, const T* y, T* out, long long n) {
    GRID_STRIDE(i, n) out[i] = x[i] + y[i];
}

// ---------------------------------------------------------------- matrix products

// C (M, N) = op(A) (M, K) @ op(B) (K, N), row-major; op(A) = A.T when trans_a (A stored
// (K, M)), op(B) = B.T when trans_b (B stored (N, K)). Used where the product must be captured
// in a CUDA graph (CuPy refuses cuBLAS during capture).
//
// A block computes an MM_BM × MM_BN tile of C from k-slabs of MM_BK staged in shared memory;
// each of its MM_THREADS threads keeps a 4 × 4 register tile (rows ty + 16 i, columns
// tx + 16 j), so one k step is 8 shared loads for 16 fused multiply-adds. Split-K: block z of
// gridDim.z sums k in [z · k_chunk, (z + 1) · k_chunk) and writes its partial product to
// out + z · M · N (out is C itself when gridDim.z == 1); sum_splits then adds the partials in
// order. Every output sums its k in a fixed order: results are deterministic.
// Grid (⌈N / MM_BN⌉, ⌈M / MM_BM⌉, splits), block (16, 16).
template <typename T>
__global__ void matmul(const T* A, const T* B, T* out, int M, int N, int K, int trans_a,
                       int trans_b, int k_chunk) {
    __shared__ T As[MM_BK][MM_BM + 1];     // op(A) slab, k-major; +1: no bank conflicts on store
    __shared__ T Bs[MM_BK][MM_BN + 1];
    const int tx = threadIdx.x, ty = threadIdx.y, t = ty * 16 + tx;
    const int m0 = blockIdx.y * MM_BM, n0 = blockIdx.x * MM_BN;
    const int k_begin = blockIdx.z * k_chunk;
    const int k_end = k_begin + k_chunk < K ? k_begin + k_chunk : K;
    T acc[4][4];
    for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) acc[i][j] = T(0);
    for (int k0 = k_begin; k0 < k_end; k0 += MM_BK) {
        // Stage the slabs; consecutive threads read consecutive addresses of the stored layout.
        for (int e = t; e < MM_BM * MM_BK; e += MM_THREADS) {
            const int m = trans_a ? e % MM_BM : e / MM_BK;
            const int k = trans_a ? e / MM_BM : e % MM_BK;
            const int gm = m0 + m, gk = k0 + k;
            T a = T(0);
            if (gm < M && gk < k_end)
                a = trans_a ? A[(long long)gk * M + gm] : A[(long long)gm * K + gk];
            As[k][m] = a;
        }
        for (int e = t; e < MM_BK * MM_BN; e += MM_THREADS) {
            const int n = trans_b ? e / MM_BK : e % MM_BN;
            const int k = trans_b ? e % MM_BK : e / MM_BN;
            const int gn = n0 + n, gk = k0 + k;
            T b = T(0);
            if (gn < N && gk < k_end)
                b = trans_b ? B[(long long)gn * K + gk] : B[(long long)gk * N + gn];
            Bs[k][n] = b;
        }
        __syncthreads();
        for (int k = 0; k < MM_BK; ++k) {
            T a[4], b[4];
            for (int i = 0; i < 4; ++i) a[i] = As[k][ty + 16 * i];
            for (int j = 0; j < 4; ++j) b[j] = Bs[k][tx + 16 * j];
            for (int i = 0; i < 4; ++i)
                for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
    }
    T* C = out + (long long)blockIdx.z * M * N;
    for (int i = 0; i < 4; ++i) {
        const int m = m0 + ty + 16 * i;
        for (int j = 0; j < 4; ++j) {
            const int n = n0 + tx + 16 * j;
            if (m < M && n < N) C[(long long)m * N + n] = acc[i][j];
        }
    }
}

// C[i] = Σ_{s < splits} P[s · n + i], in order s = 0, 1, …: the split-K partials of matmul.
template <typename T>
__global__ void sum_splits(const T* P, T* C, long long n, int splits) {
    GRID_STRIDE(i, n) {
        T sum = P[i];
        for (int s = 1; s < splits; ++s) sum += P[(long long)s * n + i];
        C[i] = sum;
    }
}

// db[c] = Σ_r delta[r, c]: the bias gradient. One thread per column (coalesced rows).
template <typename T>
__global__ void column_sum(const T* delta, T* db, long long rows, long long cols) {
    GRID_STRIDE(c, cols) {
        double s = 0.0;
        for (long long r = 0; r < rows; ++r) s += (double)delta[r * cols + c];
        db[c] = (T)s;
    }
}

// ---------------------------------------------------------------- reductions

// The sum of v over the block, valid in thread 0. blockDim.x == REDUCE_THREADS.
__device__ double block_sum(double v) {
    __shared__ double partial[REDUCE_THREADS];
    partial[threadIdx.x] = v;
    __syncthreads();
    for (int half = REDUCE_THREADS / 2; half > 0; half /= 2) {
        if ((int)threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
        __syncthreads();
    }
    return partial[0];
}

// total[0] += Σ_samples L(ŷ, y), in double (with sample weights, `weight` not null:
// Σ_r w_r L_r, each term times its row's weight). One block of REDUCE_THREADS threads, a thread per
// row; every term is formed >= 0 before it is added, so no large terms cancel:
//   mse:                  ½ Σ (ŷ - y)²
//   binary_cross_entropy: Σ z ([z > 0] - y) + log1p(exp(-|z|))
//   cross_entropy:        Σ_i y_i ((m - z_i) + log Σ_k exp(z_k - m)), m = max_k z_k
template <typename T>
__global__ void loss(const T* A, const T* Z, const T* Y, long long rows, long long cols,
                     int loss_code, double* total, const T* weight) {
    double sum = 0.0;
    for (long long r = threadIdx.x; r < rows; r += REDUCE_THREADS) {
        const T* a = A + r * cols;
        const T* z = Z + r * cols;
        const T* y = Y + r * cols;
        const double w = weight ? (double)weight[r] : 1.0;   // × 1.0: exact, unweighted as before
        if (loss_code == MSE) {
            for (long long c = 0; c < cols; ++c) {
                double d = (double)a[c] - (double)y[c];
                sum += w * (0.5 * d * d);
            }
        } else if (loss_code == BINARY_CROSS_ENTROPY) {
            for (long long c = 0; c < cols; ++c) {
                const double v = z[c], t = y[c];
                sum += w * ((v > 0.0 ? v * (1.0 - t) : -v * t) + log1p(exp(-fabs(v))));
            }
        } else {  // CROSS_ENTROPY
            double top = z[0];
            for (long long c = 1; c < cols; ++c) top = (double)z[c] > top ? (double)z[c] : top;
            double e = 0.0;
            for (long long c = 0; c < cols; ++c) e += exp((double)z[c] - top);
            const double log_e = log(e);
            for (long long c = 0; c < cols; ++c)
                sum += w * ((double)y[c] * ((top - (double)z[c]) + log_e));
        }
    }
    double s = block_sum(sum);
    if (threadIdx.x == 0) total[0] += s;
}

// out[0] = 1 / Σ_r w[r], the sum in double in an order fixed by `rows`, the reciprocal rounded
// to T; 0 when Σ w = 0 (a batch whose weights are all zero gets no gradient, not NaN). The
// normaliser of output_delta's sample weights. One block of REDUCE_THREADS threads.
template <typename T>
__global__ void weight_norm(const T* w, long long rows, T* out) {
    double sum = 0.0;
    for (long long r = threadIdx.x; r < rows; r += REDUCE_THREADS) sum += (double)w[r];
    const double s = block_sum(sum);
    if (threadIdx.x == 0) out[0] = s > 0.0 ? T(1.0 / s) : T(0);
}

// The largest v over the block, valid in every thread. blockDim.x == REDUCE_THREADS.
__device__ double block_max(double v) {
    __shared__ double top[REDUCE_THREADS];
    top[threadIdx.x] = v;
    __syncthreads();
    for (int half = REDUCE_THREADS / 2; half > 0; half /= 2) {
        if ((int)threadIdx.x < half && top[threadIdx.x + half] > top[threadIdx.x])
            top[threadIdx.x] = top[threadIdx.x + half];
        __syncthreads();
    }
    return top[0];
}

#define DOUBLE_MAX 1.7976931348623157e308

// Gradient clipping, step 1, one launch per gradient array x: block b writes the pair
// partial[2b] = s_b = Σ (x · 2^-e_b)² and partial[2b + 1] = e_b over its grid-stride share, so
// Σ x² = Σ_b s_b 2^(2 e_b). For float x, e_b = 0: squares summed in double cannot overflow
// (|x|² < 2^256). For double x, e_b is the exponent of the share's largest |x| (frexp), so no
// square overflows while ‖x‖ is representable; scaling by a power of two is exact. The grid
// (≤ NORM_BLOCKS in cupy.py) depends on n alone: deterministic.
template <typename T>
__global__ void sum_squares(const T* x, long long n, double* partial) {
    int e = 0;
    if (sizeof(T) == sizeof(double)) {
        double top = 0.0;
        GRID_STRIDE(i, n) {
            const double v = fabs((double)x[i]);
            top = v > top ? v : top;
        }
        top = block_max(top);
        if (top > 0.0 && top <= DOUBLE_MAX) frexp(top, &e);   // top = f · 2^e, ½ ≤ f < 1
    }
    const double scale = ldexp(1.0, -e);
    double sum = 0.0;
    GRID_STRIDE(i, n) {
        const double v = (double)x[i] * scale;
        sum += v * v;
    }
    const double s = block_sum(sum);
    if (threadIdx.x == 0) {
        partial[2 * blockIdx.x] = s;
        partial[2 * blockIdx.x + 1] = (double)e;
    }
}

// Gradient clipping, step 2, one block: out[0] = min(1, max_norm / ‖g‖) with
// ‖g‖² = 2^(2E) Σ_b s_b 2^(2(e_b - E)), E = max_b e_b, over the count pairs (s_b, e_b) of
// sum_squares, summed in a fixed order.
template <typename T>
__global__ void clip_factor(const double* partial, long long count, T* out, T max_norm) {
    double top = -DOUBLE_MAX;
    for (long long i = threadIdx.x; i < count; i += REDUCE_THREADS)
        top = partial[2 * i + 1] > top ? partial[2 * i + 1] : top;
    const int E = (int)block_max(top);
    double sum = 0.0;
    for (long long i = threadIdx.x; i < count; i += REDUCE_THREADS)
        sum += ldexp(partial[2 * i], 2 * ((int)partial[2 * i + 1] - E));
    const double s = block_sum(sum);
    if (threadIdx.x == 0) {
        const double norm = ldexp(sqrt(s), E);
        out[0] = norm <= (double)max_norm ? T(1) : T((double)max_norm / norm);
    }
}

// ---------------------------------------------------------------- optimizer

// One optimizer step for one parameter array of n elements, in place (optimizers.py):
//   g = clip(grad_scale · grad, -c, c) + l1 · sign(p) + 2 l2 · p  (c = clip_value when > 0)
//   AdamW first: p ← (1 - η λ) p
//   SGD p -= η g | momentum v = μ v + g, p -= η v (Nesterov η (g + μ v))
//   RMSProp s = ρ s + (1 - ρ) g², p -= η g / (√s + ε)
//   Adam m = β₁ m + (1 - β₁) g, v = β₂ v + (1 - β₂) g², p -= (η / c₁) m / (√(v / c₂) + ε)
// grad_scale_ptr (device, may be null) overrides grad_scale; schedule (may be null) holds
// [η, c₁, c₂] per step, read at schedule[3 · step[0]] (CUDA graphs replay one capture).
template <typename T>
__global__ void update(T* param, const T* grad, T* s0, T* s1, long long n, int kind,
                       T learning_rate, T momentum, int nesterov, T beta1, T beta2, T eps,
                       T bias_correction1, T bias_correction2, T weight_decay, T l1, T l2,
                       T grad_scale, const T* grad_scale_ptr, T clip_value,
                       const T* schedule, const int* step) {
    T lr = learning_rate, c1 = bias_correction1, c2 = bias_correction2;
    if (schedule) {
        const T* s = schedule + 3LL * step[0];
        lr = s[0];
        c1 = s[1];
        c2 = s[2];
    }
    const T scale = grad_scale_ptr ? grad_scale_ptr[0] : grad_scale;
    GRID_STRIDE(i, n) {
        T p = param[i];
        T g = grad[i] * scale;
        if (clip_value > T(0)) {  // clipping by value, after the norm's factor; NaN stays NaN
            if (g > clip_value) g = clip_value;
            else if (g < -clip_value) g = -clip_value;
        }
        if (l1 != T(0)) g += l1 * (p > T(0) ? T(1) : (p < T(0) ? T(-1) : T(0)));
        if (l2 != T(0)) g += T(2) * l2 * p;
        if (weight_decay != T(0)) p = p * (T(1) - lr * weight_decay);
        T change;
        if (kind == MOMENTUM) {
            T v = momentum * s0[i] + g;
            s0[i] = v;
            change = nesterov ? lr * (momentum * v + g) : lr * v;
        } else if (kind == RMSPROP) {
            T s = beta2 * s0[i] + (T(1) - beta2) * (g * g);
            s0[i] = s;
            change = lr * (g / (sqrt(s) + eps));
        } else if (kind == ADAM) {
            T m = beta1 * s0[i] + (T(1) - beta1) * g;
            T v = beta2 * s1[i] + (T(1) - beta2) * (g * g);
            s0[i] = m;
            s1[i] = v;
            change = (lr / c1) * (m / (sqrt(v / c2) + eps));
        } else {  // SGD
            change = lr * g;
        }
        param[i] = p - change;
    }
}

// ---------------------------------------------------------------- plumbing

// splitmix64's output function (Steele, Lea & Flood 2014): a bijective 64-bit mix.
__device__ unsigned long long mix64(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

#define GOLDEN_GAMMA 0x9e3779b97f4a7c15ULL

// Inverted dropout with a counter-based draw, so a CUDA graph replays fresh masks and nothing
// is allocated: rng = [key, d] (d: draws so far, advanced by an increment launch after each
// call). Draw d uses the stream s = mix64(key + d γ); element i gets u = mix64(s + (i + 1) γ)
// scaled to [0, 1) (24 bits for float, 53 for double): mask = (u >= rate) · scale, out = A ⊙ mask.
template <typename T>
__global__ void dropout(const T* A, T* mask, T* out, long long n, T rate, T scale,
                        const unsigned long long* rng) {
    const unsigned long long stream = mix64(rng[0] + rng[1] * GOLDEN_GAMMA);
    GRID_STRIDE(i, n) {
        const unsigned long long h = mix64(stream + (unsigned long long)(i + 1) * GOLDEN_GAMMA);
        const T u = sizeof(T) == 4 ? T((double)(h >> 40) * (1.0 / 16777216.0))
                                   : T((double)(h >> 11) * (1.0 / 9007199254740992.0));
        const T m = u >= rate ? scale : T(0);
        mask[i] = m;
        out[i] = A[i] * m;
    }
}

// x ← x ⊙ y.
template <typename T>
__global__ void multiply(T* x, const T* y, long long n) {
    GRID_STRIDE(i, n) x[i] = x[i] * y[i];
}

// x *= factor: a data-parallel replica's output delta, from its b rows' 1/b to the global 1/B.
template <typename T>
__global__ void scale(T* x, long long n, T factor) {
    GRID_STRIDE(i, n) x[i] = x[i] * factor;
}

// out[r, :] = X[index[base + r], :] with base = step[0] · rows (0 without step); no index:
// rows base … base + rows - 1. n = rows · cols.
template <typename T>
__global__ void take_rows(const T* X, const long long* index, const int* step, T* out,
                          long long n, long long rows, long long cols) {
    const long long base = step ? (long long)step[0] * rows : 0;
    GRID_STRIDE(i, n) {
        const long long r = i / cols;
        const long long source = index ? index[base + r] : base + r;
        out[i] = X[source * cols + i % cols];
    }
}

// counter[0] += 1: the step number a CUDA graph replay reads (schedule, batch rows), or the
// draw number of dropout.
template <typename T>
__global__ void increment(T* counter) {
    if (blockIdx.x == 0 && threadIdx.x == 0) counter[0] += T(1);
}
