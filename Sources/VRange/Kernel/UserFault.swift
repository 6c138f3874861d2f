// userfaultfd: the process-wide descriptor, register/unregister, zero-fill.
import CVRange

extension Kernel {
    enum UserFault {
        /// The process-wide userfaultfd (UFFD_FEATURE_SIGBUS), opened on first
        /// use. After fork() the child has a new one (see the at-fork handler
        /// in CVRange), so callers must not cache it.
        static func shared() throws(SystemError) -> Int32 {
            var fd: Int32 = -1
            try checkCode("userfaultfd", vr_shared_uffd(&fd))
            return fd
        }

        /// UFFDIO_REGISTER(MISSING) over [start, start+length).
        static func register(_ start: UnsafeMutableRawPointer, length: Int) throws(SystemError) {
            try checkCode("ioctl(UFFDIO_REGISTER)", vr_uffd_register(try shared(), start, length))
        }

        /// UFFDIO_UNREGISTER over [start, start+length).
        static func unregister(_ start: UnsafeMutableRawPointer, length: Int) throws(SystemError) {
            try checkCode("ioctl(UFFDIO_UNREGISTER)", vr_uffd_unregister(try shared(), start, length))
        }

        /// UFFDIO_ZEROPAGE over every missing page of [start, start+length);
        /// returns the bytes newly mapped.
        @discardableResult
        static func zeroFill(_ start: UnsafeMutableRawPointer, length: Int) throws(SystemError) -> Int {
            var filled = 0
            try checkCode("ioctl(UFFDIO_ZEROPAGE)", vr_uffd_zeropage(try shared(), start, length, &filled))
            return filled
        }
    }
}
