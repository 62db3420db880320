//! Register access in a signal handler's ucontext, and what the SIGSYS
//! handler (`handler`, `clone`) does with the interrupted context.

use crate::sys::thread::Pending;

pub const RAX: usize = libc::REG_RAX as usize;
pub const RDI: usize = libc::REG_RDI as usize;
pub const RSI: usize = libc::REG_RSI as usize;
pub const RDX: usize = libc::REG_RDX as usize;
pub const R10: usize = libc::REG_R10 as usize;
pub const R8: usize = libc::REG_R8 as usize;
pub const R9: usize = libc::REG_R9 as usize;
pub const RIP: usize = libc::REG_RIP as usize;
pub const RSP: usize = libc::REG_RSP as usize;
pub const EFL: usize = libc::REG_EFL as usize;

/// Argument registers in system call order.
pub const ARG_REGS: [usize; 6] = [RDI, RSI, RDX, R10, R8, R9];

/// A handler's view of the interrupted context.
pub struct Ctx(*mut libc::ucontext_t);

impl Ctx {
    /// # Safety
    /// `uc` is the third argument of an SA_SIGINFO handler that is running.
    pub unsafe fn new(uc: *mut libc::c_void) -> Self {
        Ctx(uc as *mut libc::ucontext_t)
    }

    pub fn raw(&self) -> *mut libc::ucontext_t {
        self.0
    }

    pub fn get(&self, reg: usize) -> i64 {
        // SAFETY: self.0 is the live ucontext of the running handler.
        unsafe { (*self.0).uc_mcontext.gregs[reg] }
    }

    pub fn set(&self, reg: usize, v: i64) {
        // SAFETY: as in `get`; the kernel restores these registers.
        unsafe { (*self.0).uc_mcontext.gregs[reg] = v }
    }

    pub fn args(&self) -> [u64; 6] {
        ARG_REGS.map(|r| self.get(r) as u64)
    }
}

/// What the handler does with the interrupted context.
pub enum Outcome {
    /// The call is complete; this goes to RAX.
    Result(i64),
    /// Run the syscall instruction again, natively, with the trap flag.
    Reexec(Pending),
}
