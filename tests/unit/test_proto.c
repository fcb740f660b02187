#include "tf_test.h"
TF_TEST(placeholder) { TF_CHECK(1); }
TF_TEST_MAIN()
