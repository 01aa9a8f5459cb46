"""The installed app: a per-user install root whose launcher swaps whole shells, and the admin policy.

Layout of an install root (`${XDG_DATA_HOME:-~/.local/share}/desktop-shell-app/` on Linux;
created by the archive's install.sh, never by root):

    desktop-shell            the launcher (POSIX sh): starts the pointer's shell, else the installed one
    installed                the version install.sh installed (plain text): never marked bad
    shells/<v>/              complete frozen builds (`desktop`, `_internal/build-info.json`, ...)
    shells/<v>.partial/      a shell being staged (never started)
    records/<v>.json         every file's size and sha256 of each staged shell
    current.json             the shell pointer (the runtime pointer's format)
    bad-versions.json        shells that failed to start (the runtime bad list's format)
    failures.json            shell releases that failed validation, and the transient backoff
    health/                  marks a shell writes once it is healthy (named by the launcher)
    downloads/, stage.lock   the stager's
    uninstall.sh             removes all of this (user data stays unless --purge)

The user's data (runtimes, settings, logs) stays in the data dir, which shells share; a shell
update changes nothing there.

    install.root       InstallRoot: the layout, found from the launcher's environment or sys.executable
    install.admin      AdminPolicy: the system-wide policy file(s), read-only for users
    install.artefact   ShellArtefact: a frozen build staged by the generic stager
    install.selfupdate check/stage shells, what the window shows, gc of old shells
    install.health     the health mark a shell writes for the launcher, the crash records, the commit
    install.failure    crashes the launcher listed, recorded by the shell that then started healthy
    install.publish    `desktop publish-shell`: a build (directory or archive) onto the signed feed
"""
