// Memory read bandwidth of this machine for the CPU-ops benchmark (docs/benchmarks.md, "How close to the machine's limit"):
// the 67 MB a sliding-layer decode step at B = 8 reads, split over N threads.  gcc -O3 -mavx2 -pthread read_bandwidth.c && ./a.out 2
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <immintrin.h>
// Read bandwidth: T threads, each summing its own N-byte buffers (8 sequences x 8.4 MB split over threads).
static size_t bytes_per_thread; static int reps = 200; static float sink[64];
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
typedef struct {float* p; size_t n; double best;} Arg;
static void* run(void* a_){Arg* a=a_; double best=1e9; for(int r=0;r<reps;r++){double t0=now(); __m256 s0=_mm256_setzero_ps(),s1=s0,s2=s0,s3=s0; for(size_t i=0;i<a->n;i+=32){s0=_mm256_add_ps(s0,_mm256_load_ps(a->p+i));s1=_mm256_add_ps(s1,_mm256_load_ps(a->p+i+8));s2=_mm256_add_ps(s2,_mm256_load_ps(a->p+i+16));s3=_mm256_add_ps(s3,_mm256_load_ps(a->p+i+24));} float o[8]; _mm256_storeu_ps(o,_mm256_add_ps(_mm256_add_ps(s0,s1),_mm256_add_ps(s2,s3))); sink[0]+=o[0]; double dt=now()-t0; if(dt<best)best=dt;} a->best=best; return 0;}
int main(int c,char**v){int T=atoi(v[1]); size_t total=8ull*8*1024*128*2*4; bytes_per_thread=total/T; pthread_t th[8]; Arg a[8];
 for(int i=0;i<T;i++){a[i].n=bytes_per_thread/4; a[i].p=aligned_alloc(64,bytes_per_thread); memset(a[i].p,1,bytes_per_thread);}
 for(int i=0;i<T;i++)pthread_create(&th[i],0,run,&a[i]); double worst=0; for(int i=0;i<T;i++){pthread_join(th[i],0); if(a[i].best>worst)worst=a[i].best;}
 printf("%d threads: %.1f MB total, best pass %.3f ms -> %.1f GB/s\n",T,total/1e6,worst*1e3,total/worst/1e9); return 0;}
