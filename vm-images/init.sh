#!/bin/busybox sh
# PID 1 of the lab's guest. Reads lab.authkey (base64 ed25519 public key
# blob for root) from the kernel command line and its SSH host key from
# fw_cfg (opt/lab/hostkey: a secret, so not on the command line). Prints
# LAB-READY on the console when sshd is up.
/bin/busybox --install -s /bin
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
mount -t proc proc /proc
echo "LAB-T init $(cut -d' ' -f1 /proc/uptime)"
# Boot benchmark baseline: kernel up, init reached, power off at once.
grep -q 'lab.mode=poweroff' /proc/cmdline && poweroff -f
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /tmp /run /mnt
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
hostname lab-guest

load_modules() {
  for m in $(cat "$1"); do
    insmod "/lib/modules/$m.ko" || echo "LAB-ERROR: insmod $m failed" | tee -a /run/lab-init.log
  done
}
load_modules /etc/lab-modules-early
echo "LAB-T modules-early $(cut -d' ' -f1 /proc/uptime)"

param() { sed -n "s/.*\blab\.$1=\([^ ]*\).*/\1/p" /proc/cmdline; }

ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2

echo "LAB-T network $(cut -d' ' -f1 /proc/uptime)"
mkdir -p /root/.ssh /etc/dropbear
chmod 700 /root/.ssh
key=$(param authkey)
[ -n "$key" ] && echo "ssh-ed25519 $key lab" > /root/.ssh/authorized_keys
hostkey=/sys/firmware/qemu_fw_cfg/by_name/opt/lab/hostkey/raw
if [ -r "$hostkey" ]; then
  cat "$hostkey" > /etc/dropbear/dropbear_ed25519_host_key
  chmod 600 /etc/dropbear/dropbear_ed25519_host_key
  dropbear -s -p 22 -r /etc/dropbear/dropbear_ed25519_host_key -P /run/dropbear.pid
else
  # No fw_cfg in this kernel: a generated key, which the lab will refuse
  # (it pins the key it made), so say why on the console.
  echo "LAB-ERROR: no fw_cfg host key (CONFIG_FW_CFG_SYSFS); ssh will be refused"
  dropbear -s -R -p 22 -P /run/dropbear.pid
fi
echo "LAB-T sshd $(cut -d' ' -f1 /proc/uptime)"
echo "LAB-READY"
# Late modules load once the lab has logged in (dropbear forks a child per
# session) or after 10 s: loading xfs.ko takes ~3 s of CPU under TCG and,
# run at once, it slows the SSH key exchange by as much.
(i=0
 while [ $i -lt 200 ] && [ "$(pidof dropbear | wc -w)" -lt 2 ]; do sleep 0.05; i=$((i+1)); done
 load_modules /etc/lab-modules-late
 echo "LAB-T modules-done $(cut -d' ' -f1 /proc/uptime)"
 touch /run/lab-modules-done) &
# Keep a shell on the console for debugging; the lab itself uses SSH.
while true; do setsid sh -c 'exec sh </dev/ttyS0 >/dev/ttyS0 2>&1'; done
