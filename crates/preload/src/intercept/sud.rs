//! Finding our executable segment and arming Syscall User Dispatch.

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::sys::kernel;
use crate::sys::thread::{Slot, BLOCK};

static TEXT_START: AtomicUsize = AtomicUsize::new(0);
static TEXT_LEN: AtomicUsize = AtomicUsize::new(0);

/// Where our text lives, and whether this module is the main executable
/// (the library linked statically into a test binary, not preloaded).
#[derive(Clone, Copy, Debug)]
pub struct TextInfo {
    pub start: usize,
    pub len: usize,
    pub is_main_program: bool,
}

struct Search {
    base: usize,
    probe: usize,
    found: Option<TextInfo>,
    main_phdr: usize,
}

unsafe extern "C" fn phdr_cb(
    info: *mut libc::dl_phdr_info,
    _size: usize,
    data: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: dl_iterate_phdr passes a valid info for the duration of the
    // call and `data` is the `Search` handed to it by `find_text`.
    let (info, search) = unsafe { (&*info, &mut *(data as *mut Search)) };
    if info.dlpi_addr as usize != search.base {
        return 0;
    }
    for i in 0..info.dlpi_phnum as usize {
        // SAFETY: dlpi_phdr points to dlpi_phnum program headers.
        let ph = unsafe { &*info.dlpi_phdr.add(i) };
        if ph.p_type != libc::PT_LOAD || ph.p_flags & libc::PF_X == 0 {
            continue;
        }
        let start = info.dlpi_addr as usize + ph.p_vaddr as usize;
        let end = start + ph.p_memsz as usize;
        if (start..end).contains(&search.probe) {
            let page = 4096;
            let start_al = start & !(page - 1);
            let end_al = (end + page - 1) & !(page - 1);
            search.found = Some(TextInfo {
                start: start_al,
                len: end_al - start_al,
                is_main_program: info.dlpi_phdr as usize == search.main_phdr,
            });
            return 1;
        }
    }
    0
}

/// Locate the executable PT_LOAD segment holding this function.
pub fn find_text() -> Option<TextInfo> {
    let probe = find_text as *const () as usize;
    // SAFETY: an all-zero Dl_info is valid; dladdr only writes to it.
    let mut dl: libc::Dl_info = unsafe { core::mem::zeroed() };
    // SAFETY: probe is the address of a function of ours.
    if unsafe { libc::dladdr(probe as *const libc::c_void, &mut dl) } == 0 {
        return None;
    }
    let mut search = Search {
        base: dl.dli_fbase as usize,
        probe,
        found: None,
        // SAFETY: getauxval has no preconditions.
        main_phdr: unsafe { libc::getauxval(libc::AT_PHDR) } as usize,
    };
    // dladdr reports the load base (l_addr), which is also dlpi_addr.
    if search.base == 0 {
        return None;
    }
    // SAFETY: the callback matches dl_iterate_phdr's contract and `search`
    // outlives the call.
    unsafe {
        libc::dl_iterate_phdr(
            Some(phdr_cb),
            &mut search as *mut Search as *mut libc::c_void,
        )
    };
    search.found
}

pub fn set_text(t: TextInfo) {
    TEXT_START.store(t.start, Ordering::Relaxed);
    TEXT_LEN.store(t.len, Ordering::Relaxed);
}

/// Arm SUD for the calling thread with `slot`'s selector, leaving the
/// selector ALLOW (the caller sets BLOCK when it is done with libc).
pub fn arm(slot: &Slot) -> Result<(), i64> {
    let start = TEXT_START.load(Ordering::Relaxed);
    let len = TEXT_LEN.load(Ordering::Relaxed);
    slot.set_selector(crate::sys::thread::ALLOW);
    let r = kernel::arm_sud(start, len, slot.selector_ptr());
    if r != 0 {
        return Err(r);
    }
    slot.owner_tid.set(kernel::gettid());
    slot.armed.set(true);
    Ok(())
}

/// Arm, or die: a thread that runs unintercepted would bypass the domains.
pub fn arm_or_die(slot: &Slot, leave_blocked: bool) {
    if let Err(e) = arm(slot) {
        let mut l = kernel::LineBuf::new();
        l.str("virtuos: cannot arm syscall user dispatch for a new thread/process: errno ")
            .int(-e);
        l.emit();
        kernel::exit_group(127);
    }
    if leave_blocked {
        slot.set_selector(BLOCK);
    }
}
