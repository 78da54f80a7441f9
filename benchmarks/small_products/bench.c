/* Times config A's five products (2-128-3, batch 64: the forward, dW, dx products of
 * one training step) through OpenBLAS (the library file given as argv[1], one thread,
 * called as fastnn calls it: row-major through column-major, beta = 0) against the
 * candidate small-product kernel of fastnn_small_gemm.h, alternately in one process,
 * argv[2] (default 4000) times each; prints the medians. It also checks that every
 * element of the candidate equals the sequential order
 *     c = a_0 b_0;  c = c + a_p b_p (p = 1, ..., k - 1), each product rounded
 * bit for bit ("order ok"), and how far BLAS's result is from it.
 * Build and run: python benchmarks/small_products.py (docs/benchmarks/
 * 2026-12-02-small-products.md has the figures and what they mean). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <math.h>
#include "fastnn_small_gemm.h" /* the candidate kernel */
typedef void (*sg)(char*,char*,int*,int*,int*,float*,float*,int*,float*,int*,float*,float*,int*);
typedef void (*dg)(char*,char*,int*,int*,int*,double*,double*,int*,double*,int*,double*,double*,int*);
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e9+t.tv_nsec;}
static int cmpd(const void*a,const void*b){double x=*(double*)a,y=*(double*)b;return x<y?-1:x>y;}
int main(int argc,char**argv){
  void*h=dlopen(argv[1],RTLD_NOW|RTLD_LOCAL);
  if(!h){fprintf(stderr,"cannot load %s\n",argv[1]);return 1;}
  sg sgemm=(sg)dlsym(h,"scipy_sgemm_"); dg dgemm=(dg)dlsym(h,"scipy_dgemm_");
  void(*setth)(int)=dlsym(h,"scipy_openblas_set_num_threads");
  if(!sgemm){sgemm=(sg)dlsym(h,"sgemm_"); dgemm=(dg)dlsym(h,"dgemm_"); setth=dlsym(h,"openblas_set_num_threads");}
  if(!sgemm||!dgemm){fprintf(stderr,"no sgemm_/dgemm_ in %s\n",argv[1]);return 1;}
  if(setth) setth(1); /* one BLAS thread, as fastnn's private instance */
  /* ta, tb, m, n, k */
  int shapes[5][5]={{0,0,64,128,2},{0,0,64,3,128},{1,0,128,3,64},{0,1,64,128,3},{1,0,2,128,64}};
  const char*names[5]={"z1=x@W1 64x128 k2","z2=a1@W2 64x3 k128","dW2=a1^T dz2 128x3 k64","da1=dz2 W2^T 64x128 k3","dW1=x^T dz1 2x128 k64"};
  int R=argc>2?atoi(argv[2]):4000; if(R>10000)R=10000;
  for(int dt=0;dt<2;dt++){
  double tb_tot=0,ts_tot=0;
  for(int s=0;s<5;s++){
    int ta=shapes[s][0],tb=shapes[s][1],m=shapes[s][2],n=shapes[s][3],k=shapes[s][4];
    int ar=ta?k:m, ac=ta?m:k, br=tb?n:k, bc=tb?k:n;
    double *A=malloc(8*ar*ac),*B=malloc(8*br*bc),*C1=malloc(8*m*n),*C2=malloc(8*m*n);
    float *Af=(float*)A,*Bf=(float*)B,*C1f=(float*)C1,*C2f=(float*)C2;
    for(int i=0;i<ar*ac;i++){double v=sin(i*0.37+1); if(dt)A[i]=v; else Af[i]=v;}
    for(int i=0;i<br*bc;i++){double v=cos(i*0.91+2); if(dt)B[i]=v; else Bf[i]=v;}
    static double tbl[10000],tsl[10000];
    char TA=ta?'T':'N',TB=tb?'T':'N'; int lda=ac,ldb=bc,ldc=n;
    float one=1,zero=0; double d1=1,d0=0;
    for(int r=0;r<R;r++){
      double t0=now();
      if(dt) dgemm(&TB,&TA,&n,&m,&k,&d1,B,&ldb,A,&lda,&d0,C1,&ldc); else sgemm(&TB,&TA,&n,&m,&k,&one,Bf,&ldb,Af,&lda,&zero,C1f,&ldc);
      double t1=now();
      if(dt) fnn_small_gemm_f64(ta,tb,m,n,k,A,lda,B,ldb,C2,ldc); else fnn_small_gemm_f32(ta,tb,m,n,k,Af,lda,Bf,ldb,C2f,ldc);
      double t2=now(); tbl[r]=t1-t0; tsl[r]=t2-t1;
    }
    qsort(tbl,R,8,cmpd);qsort(tsl,R,8,cmpd);
    /* check vs sequential scalar */
    double maxd=0;
    for(int i=0;i<m;i++)for(int j=0;j<n;j++){
      if(dt){double c=0; for(int p=0;p<k;p++){double x=ta?A[p*lda+i]:A[i*lda+p]; double y=tb?B[j*ldb+p]:B[p*ldb+j]; double pr=x*y; c=p?c+pr:pr;} if(c!=C2[i*n+j]) maxd=1e9; double d=fabs(C1[i*n+j]-c); if(d>maxd)maxd=d;}
      else {float c=0; for(int p=0;p<k;p++){float x=ta?Af[p*lda+i]:Af[i*lda+p]; float y=tb?Bf[j*ldb+p]:Bf[p*ldb+j]; float pr=x*y; c=p?c+pr:pr;} if(c!=C2f[i*n+j]) maxd=1e9; double d=fabs(C1f[i*n+j]-c); if(d>maxd)maxd=d;}
    }
    printf("%s %-26s blas %7.0f ns  small %7.0f ns  blas/small %.2f  %s  max|blas-small| %.2g\n",dt?"f64":"f32",names[s],tbl[R/2],tsl[R/2],tbl[R/2]/tsl[R/2],maxd>=1e9?"ORDER WRONG":"order ok",maxd>=1e9?0:maxd);
    tb_tot+=tbl[R/2]; ts_tot+=tsl[R/2];
  }
  printf("%s total of the five: blas %.0f ns, small %.0f ns\n",dt?"f64":"f32",tb_tot,ts_tot);
  }
}
