# Declarations of fastnn_simd.h: the hot elementwise loops, multiversioned for
# AVX-512F / AVX2 / baseline x86-64 (see the header). Scalars are already rounded to the
# array dtype; flags are 0/1. Only the C compiler sees the header, so this file has no
# .pyx and no extension module behind it.

cdef extern from "fastnn_simd.h" nogil:
    void fnn_sgd_f32(float* param, const float* grad, Py_ssize_t n, float lr, float wd,
                     int decay)
    void fnn_sgd_f64(double* param, const double* grad, Py_ssize_t n, double lr,
                     double wd, int decay)
    void fnn_momentum_f32(float* param, const float* grad, float* velocity, Py_ssize_t n,
                          float lr, float beta, float keep, float wd, int decay,
                          int nesterov)
    void fnn_momentum_f64(double* param, const double* grad, double* velocity,
                          Py_ssize_t n, double lr, double beta, double keep, double wd,
                          int decay, int nesterov)
    void fnn_adaptive_f32(float* param, const float* grad, float* sq, Py_ssize_t n,
                          float lr, float rho, float rest, float eps, float wd, int decay,
                          int inside, int rmsprop)
    void fnn_adaptive_f64(double* param, const double* grad, double* sq, Py_ssize_t n,
                          double lr, double rho, double rest, double eps, double wd,
                          int decay, int inside, int rmsprop)
    void fnn_adam_f32(float* param, const float* grad, float* m, float* v, Py_ssize_t n,
                      float lr, float b1, float b2, float rest1, float rest2, float corr1,
                      float corr2, float eps, float wd, float shrink, int decay,
                      int decoupled)
    void fnn_adam_f64(double* param, const double* grad, double* m, double* v,
                      Py_ssize_t n, double lr, double b1, double b2, double rest1,
                      double rest2, double corr1, double corr2, double eps, double wd,
                      double shrink, int decay, int decoupled)
    void fnn_adamax_f32(float* param, const float* grad, float* m, float* u, Py_ssize_t n,
                        float c, float b1, float rest1, float b2, float eps, float wd,
                        int decay)
    void fnn_adamax_f64(double* param, const double* grad, double* m, double* u,
                        Py_ssize_t n, double c, double b1, double rest1, double b2,
                        double eps, double wd, int decay)
    void fnn_scale_f32(float* x, Py_ssize_t n, float f)
    void fnn_scale_f64(double* x, Py_ssize_t n, double f)
    double fnn_sq_leaf_f32(const float* x, Py_ssize_t n)
    double fnn_sq_leaf_f64(const double* x, Py_ssize_t n)
    int fnn_bias_act_f32(float* z, const float* b, Py_ssize_t m, Py_ssize_t k, int act,
                         float alpha, float* a)
    int fnn_bias_act_f64(double* z, const double* b, Py_ssize_t m, Py_ssize_t k, int act,
                         double alpha, double* a)
    int fnn_act_grad_bias_f32(const float* da, const float* z, Py_ssize_t m,
                              Py_ssize_t k, int act, float alpha, float* dz, float* db)
    int fnn_act_grad_bias_f64(const double* da, const double* z, Py_ssize_t m,
                              Py_ssize_t k, int act, double alpha, double* dz,
                              double* db)
    void fnn_bn_sums_f32(const float* x, Py_ssize_t m, Py_ssize_t k, const double* center,
                         double* total, int squares)
    void fnn_bn_sums_f64(const double* x, Py_ssize_t m, Py_ssize_t k,
                         const double* center, double* total, int squares)
    void fnn_bn_normalise_f32(const float* x, Py_ssize_t m, Py_ssize_t k,
                              const double* mean, const double* inv, const float* gamma,
                              const float* beta, float* x_hat, float* out)
    void fnn_bn_normalise_f64(const double* x, Py_ssize_t m, Py_ssize_t k,
                              const double* mean, const double* inv, const double* gamma,
                              const double* beta, double* x_hat, double* out)
    void fnn_bn_grad_sums_f32(const float* dout, const float* x_hat, Py_ssize_t m,
                              Py_ssize_t k, double* db, double* dg)
    void fnn_bn_grad_sums_f64(const double* dout, const double* x_hat, Py_ssize_t m,
                              Py_ssize_t k, double* db, double* dg)
    void fnn_bn_dx_f32(const float* dout, const float* x_hat, Py_ssize_t m, Py_ssize_t k,
                       const double* scale, const double* db, const double* dg, float* dx)
    void fnn_bn_dx_f64(const double* dout, const double* x_hat, Py_ssize_t m,
                       Py_ssize_t k, const double* scale, const double* db,
                       const double* dg, double* dx)
    # products with an inner dimension 1 <= k <= FNN_SMALL_K (blas_cython.pxd's gemm_call)
    enum: FNN_SMALL_K
    void fnn_gemm_small_k_f32(int trans_a, int trans_b, Py_ssize_t m, Py_ssize_t n,
                              Py_ssize_t k, const float* a, Py_ssize_t lda, const float* b,
                              Py_ssize_t ldb, float* c, Py_ssize_t ldc)
    void fnn_gemm_small_k_f64(int trans_a, int trans_b, Py_ssize_t m, Py_ssize_t n,
                              Py_ssize_t k, const double* a, Py_ssize_t lda,
                              const double* b, Py_ssize_t ldb, double* c, Py_ssize_t ldc)
    # a dense forward with such an inner dimension, bias and activation in one pass
    bint fnn_small_k_bias_act_f32(const float* x, const float* w, const float* b,
                                  Py_ssize_t m, Py_ssize_t kin, Py_ssize_t n, int act,
                                  float alpha, float* z, float* a)
    bint fnn_small_k_bias_act_f64(const double* x, const double* w, const double* b,
                                  Py_ssize_t m, Py_ssize_t kin, Py_ssize_t n, int act,
                                  double alpha, double* z, double* a)
    # the input gradient through such a product with the layer below's activation
    # gradient and bias sum in one pass
    bint fnn_small_k_act_grad_bias_f32(const float* g, const float* wt, const float* z,
                                       Py_ssize_t m, Py_ssize_t kin, Py_ssize_t n,
                                       int act, float alpha, float* dz, float* db)
    bint fnn_small_k_act_grad_bias_f64(const double* g, const double* wt,
                                       const double* z, Py_ssize_t m, Py_ssize_t kin,
                                       Py_ssize_t n, int act, double alpha, double* dz,
                                       double* db)
