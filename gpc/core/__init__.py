"""The math of composition: noise paths, parameterizations, the parent contract, normalizers and action spaces,
working samplers, operators and the composer. It knows no simulator, robot, file format or command."""
