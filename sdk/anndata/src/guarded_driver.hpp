// The guarded read-only HDF5 file driver (guarded_driver.cpp). Internal to scssl_anndata.
#pragma once

#include <hdf5.h>

#include <string>

namespace scssl::h5::detail {

// The driver's id, registered once per module (the callbacks live in this module's code);
// negative when HDF5 refused the registration.
hid_t guarded_driver();

// What the driver refused last on this thread (one sentence), or "". take_ clears it.
std::string take_driver_problem();
void clear_driver_problem();

}  // namespace scssl::h5::detail
