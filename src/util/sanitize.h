/* VGPU_SANITIZED is 1 in AddressSanitizer builds (gcc or clang). */
#pragma once

#if defined(__SANITIZE_ADDRESS__)
#define VGPU_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define VGPU_SANITIZED 1
#endif
#endif
#ifndef VGPU_SANITIZED
#define VGPU_SANITIZED 0
#endif
