#!/bin/sh
echo "coverage tools are not available offline; swap in the real remote_coverage_tools" >&2
exit 1
