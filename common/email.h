/*
 * email.h - the one rule for an email address, shared by tf-master (user
 * accounts, try job addresses, the mail config, recipients) and tf-try
 * (--email and the "email" key), so that tf-try never accepts what the
 * master would refuse.
 *
 * The rule is a plain addr-spec as it can go, unquoted and unencoded,
 * into an SMTP envelope (RCPT TO:<...>) and a To: header: local@domain,
 * 3..254 bytes of printable ASCII, exactly one '@' with something on both
 * sides, none of the characters that need quoting in a header ( space " <
 * > ( ) , ; : \ [ ] ), and a domain that neither starts nor ends with '.'.
 * Non-ASCII addresses (SMTPUTF8) are refused: the sender does not
 * negotiate that extension.
 */
#ifndef TF_EMAIL_H
#define TF_EMAIL_H

#include <stdbool.h>

#define TF_EMAIL_MAX 254

/* Whether s is a plain address by the rule above; false for NULL. */
bool tf_email_valid(const char *s);

#endif
