# SLM_REQUIRE_PKG(VAR, PKG-EXPR, NAME, DEBIAN-PACKAGES, [ALTERNATIVE-PKG-EXPR])
# Find a required library with pkg-config (PKG-EXPR, else ALTERNATIVE-PKG-EXPR), unless
# the user set VAR_LIBS; otherwise stop, naming the Debian packages that provide it.
AC_DEFUN([SLM_REQUIRE_PKG], [
  AC_ARG_VAR([$1_CFLAGS], [C compiler flags for $3, overriding pkg-config])
  AC_ARG_VAR([$1_LIBS], [linker flags for $3, overriding pkg-config])
  AC_MSG_CHECKING([for $3])
  AS_IF([test "x$$1_LIBS" != x], [AC_MSG_RESULT([from $1_CFLAGS/$1_LIBS])], [
    slm_pkg=no
    AS_IF([$PKG_CONFIG --exists "$2"], [slm_pkg="$2"],
          [test "x$5" != x && $PKG_CONFIG --exists "$5"], [slm_pkg="$5"])
    AS_IF([test "x$slm_pkg" = xno],
      [AC_MSG_RESULT([no])
       AC_MSG_ERROR([$3 not found. On Debian/Ubuntu: apt-get install $4 (or point PKG_CONFIG_PATH at its .pc file, or set $1_CFLAGS and $1_LIBS)])])
    $1_CFLAGS=`$PKG_CONFIG --cflags "$slm_pkg"`
    $1_LIBS=`$PKG_CONFIG --libs "$slm_pkg"`
    AC_MSG_RESULT([yes ($slm_pkg)])])
])
