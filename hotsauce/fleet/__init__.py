"""`hotsauce fleet`: many build.yaml projects built on the build hosts of an Ansible inventory.

Ansible reaches the builders and runs the work there, through the playbooks in
`playbooks/` (fleet_setup.yml prepares a builder, fleet_build.yml builds one
project on one builder and fetches the set back). This package only decides
which build goes to which builder next: it runs one playbook invocation per
build, with ansible-runner, in a thread per build slot of each builder.
"""
