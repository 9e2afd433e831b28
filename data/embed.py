#!/usr/bin/env python3
"""Writes a C file holding the bytes of a file: embed.py INPUT OUTPUT NAME
gives `const unsigned char NAME[]` (with a NUL after the bytes, not
counted) and `const size_t NAME_len`."""
import sys

src, dst, name = sys.argv[1:4]
with open(src, 'rb') as f:
    data = f.read()
lines = ['/* Generated from %s by data/embed.py: do not edit. */' % src.split('/')[-1],
         '#include <stddef.h>',
         'extern const unsigned char %s[];' % name,
         'extern const size_t %s_len;' % name,
         'const unsigned char %s[] = {' % name]
for i in range(0, len(data), 16):
    lines.append('  ' + ', '.join('0x%02x' % b for b in data[i:i + 16]) + ',')
lines.append('  0x00};')
lines.append('const size_t %s_len = %d;' % (name, len(data)))
with open(dst, 'w') as f:
    f.write('\n'.join(lines) + '\n')
