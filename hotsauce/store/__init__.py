"""What a build keeps between builds: the cache folder, tar.zst snapshots of a root, build logs."""
