"""The modules a build runs against the root: resolving them, Python modules, Ansible runs
through the chroot, Galaxy installs, the module-results cache and hotsauce's Ansible plugins."""
