// cuda_host_runtime.cpp -- the grid launcher of the CUDA host emulation (test harness only).
//
// Blocks are spread over OpenMP workers.  A worker runs a block in one of two modes:
//   PLAIN: the block's threads run one after another in a z/y/x loop (fast).  A
//          __syncthreads() with more than one thread per block throws, and the launch
//          returns EMU_ERR_SYNC_IN_PLAIN: never a silently wrong result.
//   FIBER: every CUDA thread of the block is a user-space fiber with its own mmap'd stack
//          (guard page below).  Fibers are bootstrapped once per worker with
//          makecontext/swapcontext and switched afterwards with _setjmp/_longjmp (~20 ns,
//          no sigprocmask syscall).  __syncthreads() parks the fiber and jumps back to the
//          block scheduler, which runs every live fiber up to its next barrier (or its end)
//          and then releases them all.  Exited threads count as arrived.
// __shared__ is `static thread_local`: one copy per worker, i.e. per running block;
// correct because fibers never migrate between workers.
// Build with -U_FORTIFY_SOURCE (fortified longjmp refuses cross-stack jumps) and
// -mtls-dialect=gnu2.
#include "cuda_host_shim.h"

#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <vector>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>
#include <omp.h>

namespace emu {
thread_local uint3 t_idx;
thread_local uint3 b_idx;
thread_local dim3 b_dim;
thread_local dim3 g_dim;

namespace {

enum { MODE_PLAIN = 0, MODE_FIBER = 1 };
enum { ST_RUN = 0, ST_BARRIER = 1, ST_DONE = 2 };
constexpr size_t kStack = 256 * 1024;

using KernelCall = void (*)(void**);

struct Fiber {
    jmp_buf jb;
    ucontext_t uc;
    void* mem = nullptr;
    int state = ST_DONE;
    uint3 idx{0, 0, 0};
};

struct Worker {
    jmp_buf sched;
    std::vector<Fiber*> fibers;
    Fiber* current = nullptr;
    int mode = MODE_PLAIN;
    KernelCall call = nullptr;
    void** args = nullptr;
    long long barriers = 0;
};

thread_local Worker* tw = nullptr;

[[noreturn]] void to_scheduler() { _longjmp(tw->sched, 1); }

void fiber_main() {
    Fiber* self = tw->current;
    for (;;) {
        if (!_setjmp(self->jb)) to_scheduler();  // park until the scheduler starts a block
        self = tw->current;
        tw->call(tw->args);
        self->state = ST_DONE;
    }
}

void ensure_fibers(Worker& w, unsigned n) {
    while (w.fibers.size() < n) {
        Fiber* f = new Fiber();
        long page = sysconf(_SC_PAGESIZE);
        void* mem = mmap(nullptr, kStack + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (mem == MAP_FAILED) throw std::runtime_error("mmap of a fiber stack failed");
        mprotect(mem, page, PROT_NONE);  // guard page: a stack overflow faults instead of corrupting
        f->mem = mem;
        getcontext(&f->uc);
        f->uc.uc_stack.ss_sp = static_cast<char*>(mem) + page;
        f->uc.uc_stack.ss_size = kStack;
        f->uc.uc_link = nullptr;
        makecontext(&f->uc, fiber_main, 0);
        w.fibers.push_back(f);
        w.current = f;
        ucontext_t here;
        if (!_setjmp(w.sched)) swapcontext(&here, &f->uc);  // runs until fiber_main parks
    }
}

void run_block_fiber(Worker& w, const dim3& bd) {
    unsigned n = bd.x * bd.y * bd.z;
    ensure_fibers(w, n);
    for (unsigned i = 0; i < n; ++i) {
        Fiber* f = w.fibers[i];
        f->state = ST_RUN;
        f->idx = uint3{i % bd.x, (i / bd.x) % bd.y, i / (bd.x * bd.y)};
    }
    for (;;) {
        unsigned live = 0;
        for (unsigned i = 0; i < n; ++i) {
            Fiber* f = w.fibers[i];
            if (f->state != ST_RUN) continue;
            w.current = f;
            t_idx = f->idx;
            if (!_setjmp(w.sched)) _longjmp(f->jb, 1);
            if (f->state == ST_BARRIER) ++live;
        }
        if (!live) break;
        ++w.barriers;
        for (unsigned i = 0; i < n; ++i)
            if (w.fibers[i]->state == ST_BARRIER) w.fibers[i]->state = ST_RUN;
    }
}

void run_block_plain(Worker& w, const dim3& bd) {
    for (unsigned z = 0; z < bd.z; ++z)
        for (unsigned y = 0; y < bd.y; ++y)
            for (unsigned x = 0; x < bd.x; ++x) {
                t_idx = uint3{x, y, z};
                w.call(w.args);
            }
}

}  // namespace

void syncthreads() {
    if (!tw) return;
    if (tw->mode == MODE_PLAIN) {
        if (b_dim.x * b_dim.y * b_dim.z > 1)
            throw std::logic_error("__syncthreads() called in PLAIN mode");
        return;
    }
    Fiber* self = tw->current;
    self->state = ST_BARRIER;
    if (!_setjmp(self->jb)) to_scheduler();
}

}  // namespace emu

extern "C" {

// Error codes returned to Python (plugin/gpu_emulation.py turns them into exceptions).
#define EMU_OK 0
#define EMU_ERR_EXCEPTION -1
#define EMU_ERR_SYNC_IN_PLAIN -2
#define EMU_ERR_BAD_GEOMETRY -3

static thread_local char emu_errmsg[512];

const char* emu_last_error() { return emu_errmsg; }

int emu_launch(void (*call)(void**), void** args, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
               unsigned by, unsigned bz, int mode, int workers) {
    using namespace emu;
    if (!gx || !gy || !gz || !bx || !by || !bz || (unsigned long long)bx * by * bz > 1024ULL) {
        snprintf(emu_errmsg, sizeof emu_errmsg, "bad launch geometry grid=(%u,%u,%u) block=(%u,%u,%u)", gx, gy, gz, bx, by, bz);
        return EMU_ERR_BAD_GEOMETRY;
    }
    const long long nblocks = (long long)gx * gy * gz;
    int rc = EMU_OK;
    char msg[512] = {0};
    if (workers <= 0) workers = omp_get_max_threads();
#pragma omp parallel num_threads(workers)
    {
        static thread_local Worker worker;
        tw = &worker;
        worker.mode = mode;
        worker.call = call;
        worker.args = args;
        b_dim = dim3(bx, by, bz);
        g_dim = dim3(gx, gy, gz);
#pragma omp for schedule(dynamic, 4)
        for (long long b = 0; b < nblocks; ++b) {
            int failed;
#pragma omp atomic read
            failed = rc;
            if (failed) continue;
            b_idx = uint3{(unsigned)(b % gx), (unsigned)((b / gx) % gy), (unsigned)(b / ((long long)gx * gy))};
            try {
                if (mode == MODE_FIBER)
                    run_block_fiber(worker, b_dim);
                else
                    run_block_plain(worker, b_dim);
            } catch (const std::exception& e) {
#pragma omp critical(emu_err)
                {
                    if (!rc) {
                        rc = strstr(e.what(), "PLAIN mode") ? EMU_ERR_SYNC_IN_PLAIN : EMU_ERR_EXCEPTION;
                        snprintf(msg, sizeof msg, "%s", e.what());
                    }
                }
            }
        }
        tw = nullptr;
    }
    snprintf(emu_errmsg, sizeof emu_errmsg, "%s", msg);
    return rc;
}

}  // extern "C"
