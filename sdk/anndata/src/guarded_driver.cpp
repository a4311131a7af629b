// A guarded read-only HDF5 file driver: the only code of scssl_anndata that uses HDF5's driver
// interface (H5FD_class_t, in H5FDpublic.h up to 1.12 and H5FDdevelop.h from 1.13, both included
// by hdf5.h), which changed between releases; docs/hdf5.md lists the versions it is checked with.
//
// HDF5 1.10 trusts the object table of a global heap collection (where variable-length strings
// live): a corrupt object size makes H5HG_read copy past the collection and crash the process.
// Files opened for reading go through this driver, which is POSIX pread like HDF5's default
// "sec2" driver but checks every global heap collection as it is read and fails the read (an
// ordinary HDF5 error) when the collection is malformed. HDF5 reads heaps as raw data, so they are
// recognised by their "GCOL" signature.

#include "guarded_driver.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <string>
#include <vector>

namespace scssl::h5::detail {

namespace {

// What the driver refused last, consumed by the caller's error message.
thread_local std::string g_driver_problem;

#if H5_VERSION_GE(1, 13, 0)
// A driver's identifying value (a field since 1.13): values below H5_VFD_RESERVED (256) belong to
// HDF5's own drivers, and HDF5 sets 256-511 aside for drivers outside its registry.
constexpr H5FD_class_value_t kDriverValue = 511;
#endif

struct GuardedFile {
  H5FD_t pub;  // must come first: HDF5 owns these fields
  int fd = -1;
  haddr_t eoa = 0, eof = 0;
  dev_t device = 0;
  ino_t inode = 0;
  unsigned length_size = 8;  // "size of lengths" from the superblock
};

uint64_t decode_le(const unsigned char* p, unsigned n) {
  uint64_t v = 0;
  for (unsigned i = 0; i < n; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

// The superblock's size of lengths (8 in every file h5py writes); 8 when it cannot be found.
unsigned superblock_length_size(int fd, uint64_t eof) {
  static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
  for (uint64_t at = 0; at + 16 <= eof; at = at ? at * 2 : 512) {
    unsigned char b[16];
    if (::pread(fd, b, sizeof b, static_cast<off_t>(at)) != static_cast<ssize_t>(sizeof b)) break;
    if (std::memcmp(b, sig, 8) != 0) continue;
    const unsigned n = b[8] <= 1 ? b[14] : b[10];  // versions 0/1 vs 2/3
    return (n == 2 || n == 4 || n == 8) ? n : 8;
  }
  return 8;
}

// Checks one global heap collection the way HDF5 will parse it; "" if it is sound.
std::string check_heap(const unsigned char* p, size_t have, unsigned L, uint64_t room) {
  const size_t header = 8 + L, object_header = 8 + L;
  if (have < header || p[4] != 1) return "a global heap collection has an unknown version";
  const uint64_t size = decode_le(p + 8, L);
  if (size < header || size > room)
    return "a global heap collection declares a size beyond the end of the file";
  if (have < size) return "a global heap collection was read only in part";
  uint64_t at = header;
  while (at < size) {
    if (at + object_header > size) break;  // tail too small for an object: free space
    const unsigned index = static_cast<unsigned>(decode_le(p + at, 2));
    const uint64_t length = decode_le(p + at + 8, L);
    uint64_t need;
    if (index > 0) {
      if (length > size - at - object_header)
        return "a global heap object extends past its collection";
      need = object_header + ((length + 7) & ~uint64_t{7});
    } else {
      need = length;  // free space: its size includes the header
      if (need < object_header) return "a global heap collection has malformed free space";
    }
    if (need > size - at) return "a global heap object extends past its collection";
    at += need;
  }
  return "";
}

H5FD_t* guarded_open(const char* name, unsigned flags, hid_t, haddr_t maxaddr) {
  if (flags & (H5F_ACC_RDWR | H5F_ACC_CREAT | H5F_ACC_TRUNC)) return nullptr;  // read-only
  const int fd = ::open(name, O_RDONLY);
  if (fd < 0) return nullptr;
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return nullptr;
  }
  auto* f = new GuardedFile();
  f->fd = fd;
  f->eof = static_cast<haddr_t>(st.st_size);
  f->device = st.st_dev;
  f->inode = st.st_ino;
  f->length_size = superblock_length_size(fd, f->eof);
  (void)maxaddr;
  return &f->pub;
}

herr_t guarded_close(H5FD_t* file) {
  auto* f = reinterpret_cast<GuardedFile*>(file);
  ::close(f->fd);
  delete f;
  return 0;
}

int guarded_cmp(const H5FD_t* a, const H5FD_t* b) {
  auto* x = reinterpret_cast<const GuardedFile*>(a);
  auto* y = reinterpret_cast<const GuardedFile*>(b);
  if (x->device != y->device) return x->device < y->device ? -1 : 1;
  if (x->inode != y->inode) return x->inode < y->inode ? -1 : 1;
  return 0;
}

herr_t guarded_query(const H5FD_t*, unsigned long* flags) {
  if (flags) *flags = H5FD_FEAT_DATA_SIEVE;  // no metadata accumulation: reads stay separate
  return 0;
}

haddr_t guarded_get_eoa(const H5FD_t* file, H5FD_mem_t) {
  return reinterpret_cast<const GuardedFile*>(file)->eoa;
}

herr_t guarded_set_eoa(H5FD_t* file, H5FD_mem_t, haddr_t addr) {
  reinterpret_cast<GuardedFile*>(file)->eoa = addr;
  return 0;
}

haddr_t guarded_get_eof(const H5FD_t* file, H5FD_mem_t) {
  return reinterpret_cast<const GuardedFile*>(file)->eof;
}

herr_t guarded_get_handle(H5FD_t* file, hid_t, void** handle) {
  *handle = &reinterpret_cast<GuardedFile*>(file)->fd;
  return 0;
}

herr_t guarded_read(H5FD_t* file, H5FD_mem_t, hid_t, haddr_t addr, size_t size, void* buffer) {
  auto* f = reinterpret_cast<GuardedFile*>(file);
  auto* out = static_cast<unsigned char*>(buffer);
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::pread(f->fd, out + done, size - done, static_cast<off_t>(addr + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (n == 0) {  // past the end of the file: zeros, as HDF5's own drivers do
      std::memset(out + done, 0, size - done);
      break;
    }
    done += static_cast<size_t>(n);
  }
  if (size >= 8 + f->length_size && std::memcmp(out, "GCOL", 4) == 0) {
    const uint64_t room = f->eof > addr ? f->eof - addr : 0;
    std::string problem;
    const uint64_t declared = decode_le(out + 8, f->length_size);
    if (declared > size && declared <= room) {
      // HDF5 reads a collection larger than 4 KiB in two pieces (the first 4 KiB, then the
      // rest); check the whole of it now, from the file.
      std::vector<unsigned char> whole(static_cast<size_t>(declared));
      size_t got = 0;
      while (got < whole.size()) {
        const ssize_t n =
            ::pread(f->fd, whole.data() + got, whole.size() - got, static_cast<off_t>(addr + got));
        if (n <= 0) {
          if (n < 0 && errno == EINTR) continue;
          break;
        }
        got += static_cast<size_t>(n);
      }
      problem = check_heap(whole.data(), got, f->length_size, room);
    } else {
      problem = check_heap(out, size, f->length_size, room);
    }
    if (!problem.empty()) {
      g_driver_problem = problem + " (at byte " + std::to_string(addr) + "); the file is corrupt";
      return -1;
    }
  }
  return 0;
}

herr_t guarded_write(H5FD_t*, H5FD_mem_t, hid_t, haddr_t, size_t, const void*) { return -1; }

herr_t guarded_truncate(H5FD_t*, hid_t, hbool_t) { return 0; }

H5FD_class_t make_class() {
  H5FD_class_t c{};  // every callback not set here stays null: HDF5 then uses its default
  // The class layout differs between releases (docs/hdf5.md): 1.10 and 1.12 have neither field
  // below; 1.13.2+ (so 1.14) refuses a class whose version is not the headers' H5FD_CLASS_VERSION.
  // The callbacks are assigned by name, so fields added in between stay null (HDF5's defaults).
#ifdef H5FD_CLASS_VERSION
  c.version = H5FD_CLASS_VERSION;
#endif
#if H5_VERSION_GE(1, 13, 0)
  c.value = kDriverValue;
#endif
  c.name = "scssl_guarded";
  c.maxaddr = (haddr_t{1} << 62) - 1;
  c.fc_degree = H5F_CLOSE_WEAK;
  c.open = guarded_open;
  c.close = guarded_close;
  c.cmp = guarded_cmp;
  c.query = guarded_query;
  c.get_eoa = guarded_get_eoa;
  c.set_eoa = guarded_set_eoa;
  c.get_eof = guarded_get_eof;
  c.get_handle = guarded_get_handle;
  c.read = guarded_read;
  c.write = guarded_write;
  c.truncate = guarded_truncate;
  const H5FD_mem_t map[] = H5FD_FLMAP_DICHOTOMY;
  std::copy(std::begin(map), std::end(map), c.fl_map);
  return c;
}

}  // namespace

hid_t guarded_driver() {
  static const H5FD_class_t cls = make_class();
  // One registration per module: the class's functions live in this module's code.
  static const hid_t id = H5FDregister(&cls);
  return id;
}

std::string take_driver_problem() {
  std::string problem;
  problem.swap(g_driver_problem);
  return problem;
}

void clear_driver_problem() { g_driver_problem.clear(); }

}  // namespace scssl::h5::detail
