// SPDX-License-Identifier: Apache-2.0
//! @file config.hpp
//! Build-wide macros: the host/device attribute and the library version.
#pragma once

#define SSMLEN_VERSION_MAJOR 0
#define SSMLEN_VERSION_MINOR 1
#define SSMLEN_VERSION_PATCH 0

// Host-device helpers compile as plain functions under a host compiler and as
// __host__ __device__ under nvcc, so one body serves the CPU oracle and kernels.
#if defined(__CUDACC__)
#define SSMLEN_HD __host__ __device__
#else
#define SSMLEN_HD
#endif
