#!/bin/sh
# Render the ACL file from the template with the passwords from the environment, then exec Redis
# (PID 1, so SIGTERM from `docker compose stop` reaches it). Redis takes no comments in an ACL
# file: the template's `#` lines (notes for whoever edits it) are dropped here.
set -eu
umask 077
sed -e '/^#/d' \
    -e "s|@REDIS_ADMIN_PASSWORD@|${REDIS_ADMIN_PASSWORD}|" \
    -e "s|@NOTES_API_REDIS_PASSWORD@|${NOTES_API_REDIS_PASSWORD}|" \
    -e "s|@NOTES_API_WORKER_REDIS_PASSWORD@|${NOTES_API_WORKER_REDIS_PASSWORD}|" \
    -e "s|@ARCHIVER_REDIS_PASSWORD@|${ARCHIVER_REDIS_PASSWORD}|" \
    -e "s|@SCHEDULER_REDIS_PASSWORD@|${SCHEDULER_REDIS_PASSWORD}|" \
    -e "s|@FANOUT_REDIS_PASSWORD@|${FANOUT_REDIS_PASSWORD}|" \
    -e "s|@CONSOLE_REDIS_PASSWORD@|${CONSOLE_REDIS_PASSWORD}|" \
    /usr/local/etc/redis/users.acl.template > /data/users.acl
exec redis-server /usr/local/etc/redis/redis.conf
